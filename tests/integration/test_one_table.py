"""The catalog the programs build from the environment reads and writes the same table."""

from __future__ import annotations

import pytest

from backfill.adapters.transport import HttpClient
from backfill.core.payload import MetaPatch
from backfill.settings import CatalogSettings, load_settings
from backfill.wiring import open_catalog
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.serve import serve


async def test_reads_and_merges_go_to_studio_board(http: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    double = PostgrestDouble("svc")
    row = double.add_row(title="t", status="published", meta={"keep": 1})
    async with serve(double.app()) as url:
        monkeypatch.setenv("SUPA_REST_URL", url)
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "svc")
        monkeypatch.delenv("CATALOG_DSN", raising=False)
        monkeypatch.delenv("SUPABASE_DB_URL", raising=False)
        async with open_catalog(load_settings([CatalogSettings]), http) as catalog:
            assert (await catalog.get_row(row["id"])) is not None
            await catalog.merge_meta(row["id"], MetaPatch(patch={"added": 2}, defaults={}))
    tables = {path.rsplit("/", 1)[-1] for _, path, _ in double.requests}
    assert tables == {"studio_board", "backfill_merge_meta"}  # the read, and the RPC writing studio_board
    assert double.rows[row["id"]]["meta"] == {"keep": 1, "added": 2}
