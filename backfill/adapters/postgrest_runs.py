"""`backfill_runs` through PostgREST (Supabase REST): the `RunTable` port (`backfill.core.ports`) of the
optional run log; on a catalog configured with a DSN, `backfill.adapters.pgruns` writes it directly.

An upsert is a POST with `resolution=merge-duplicates`, an update a PATCH `?id=eq.`; a missing table is
404 `PGRST205` (or `42P01` from older PostgREST), reported as False.
"""

from __future__ import annotations

import json

from backfill.adapters.postgrest import auth_headers, table_missing
from backfill.adapters.transport import HttpClient, Upstream, raise_for_status
from backfill.core.runs import TABLE, RunRecord

SERVICE = "catalog"


class PostgrestRunTable:
    """`backfill_runs` through PostgREST (Supabase REST)."""

    def __init__(self, http: HttpClient, rest_url: str, service_key: str, table: str = TABLE) -> None:
        self._up = Upstream(http, SERVICE)
        self._url = f"{rest_url.rstrip('/')}/{table}"
        self._headers = {**auth_headers(service_key), "Content-Type": "application/json"}

    async def upsert(self, record: RunRecord) -> bool:
        return await self._send("POST", {}, record, "resolution=merge-duplicates,return=minimal")

    async def update(self, run_id: str, record: RunRecord) -> bool:
        return await self._send("PATCH", {"id": f"eq.{run_id}"}, record, "return=minimal")

    async def _send(self, method: str, params: dict[str, str], body: RunRecord, prefer: str) -> bool:
        response = await self._up.request(
            method,
            self._url,
            params=params,
            content=json.dumps(body),
            headers={**self._headers, "Prefer": prefer},
        )
        if table_missing(response):
            return False
        raise_for_status(SERVICE, response)
        return True
