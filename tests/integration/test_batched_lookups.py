"""Rows handled side by side share their lookups: one `id=in.(...)` read, one Jellyfin `ids=` request.

Against the strict doubles over loopback, so the batched requests are checked for real: the row read
and the item lookup of each row must give exactly what the one-by-one requests give, including a
Jellyfin item that has gone (title search takes over, as after a 404) and a row that is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backfill.adapters.transport import READ_ATTEMPTS
from backfill.core.outcome import Ack, Retry
from backfill.core.wire import Mode, new_request
from tests.support.pipeline import SERVER, Rig, pipeline_rig


@pytest.fixture
async def rig(nats_url: str, contracts_dir: Path) -> AsyncIterator[Rig]:
    async with pipeline_rig(nats_url, contracts_dir, timeout=5.0, batch=40) as built:
        yield built


def add(rig: Rig, name: str) -> tuple[int, str]:
    item = rig.jellyfin.add_item(name, run_time_ticks=600_000_000)
    row = rig.db.add_row(
        title=name,
        status="published",
        content_url=f"s3://outputs/{name}.mp4",
        meta={"jellyfin_item_id": item["Id"]},
    )
    return int(row["id"]), str(item["Id"])


async def handle_all(rig: Rig, row_ids: list[int], mode: Mode) -> list[object]:
    return await asyncio.gather(
        *(rig.processor.handle(new_request(r, "2025-10-14", mode, "run-b"), attempt=1) for r in row_ids)
    )


async def test_rows_started_together_share_one_row_read_and_one_item_lookup(rig: Rig) -> None:
    rows = [add(rig, f"Title {n}") for n in range(12)]
    outcomes = await handle_all(rig, [r for r, _ in rows], Mode.METADATA_ONLY)

    assert outcomes == [Ack("done", "metadata_updated", ("jellyfin_id",))] * 12
    reads = [q for m, p, q in rig.db.requests if m == "GET"]
    assert len(reads) == 1 and reads[0]["id"].startswith("in.(")
    lookups = [q for m, p, q in rig.jellyfin.requests if m == "GET"]
    assert len(lookups) == 1
    assert sorted(lookups[0]["ids"].split(",")) == sorted(item for _, item in rows)
    for row_id, item_id in rows:
        meta = rig.db.rows[row_id]["meta"]
        assert meta["jellyfin_item_id"] == item_id and meta["jellyfin_public_url"].endswith(
            item_id + f"&serverId={SERVER}"
        )


async def test_an_item_missing_from_the_batch_falls_back_to_search_and_a_gone_row_is_skipped(
    rig: Rig,
) -> None:
    (kept, _), (moved, moved_item), (gone, _) = add(rig, "Kept"), add(rig, "Moved Away"), add(rig, "Gone")
    rig.jellyfin.delete_item(moved_item)
    replacement = rig.jellyfin.add_item("Moved Away", run_time_ticks=600_000_000)
    del rig.db.rows[gone]

    outcomes = await handle_all(rig, [kept, moved, gone], Mode.REPUBLISH)

    assert outcomes[0] == Ack("done", "republished", ("jellyfin_id",))
    assert outcomes[1] == Ack("done", "republished", ("jellyfin_search",))
    assert outcomes[2] == Ack("skipped", "row_missing")
    assert rig.db.rows[moved]["meta"]["jellyfin_item_id"] == replacement["Id"]
    assert len(rig.agent.envelopes) == 2


async def test_a_catalog_that_stays_down_retries_each_row(rig: Rig) -> None:
    rows = [add(rig, f"Retry {n}") for n in range(3)]
    rig.db.fail_rate = 1.0  # the shared read, and each row's own read after it, answer 503
    outcomes = await handle_all(rig, [r for r, _ in rows], Mode.METADATA_ONLY)
    assert all(isinstance(o, Retry) and "catalog" in o.error for o in outcomes)
    assert not rig.agent.envelopes


async def test_a_failed_batch_read_falls_back_to_one_read_per_row(rig: Rig) -> None:
    """The shared read fails on every try; each row is then read on its own and only its own fault
    can fail it."""
    rows = [add(rig, f"Fallback {n}") for n in range(3)]
    rig.db.fail_next = READ_ATTEMPTS  # exactly the tries of the one shared read
    outcomes = await handle_all(rig, [r for r, _ in rows], Mode.METADATA_ONLY)
    assert outcomes == [Ack("done", "metadata_updated", ("jellyfin_id",))] * 3
    assert rig.db.calls["select"] == 3  # no batched read got through; one per row did


async def test_a_failed_batch_lookup_falls_back_to_one_lookup_per_item(rig: Rig) -> None:
    rows = [add(rig, f"Lookup {n}") for n in range(3)]
    rig.jellyfin.fail_next = READ_ATTEMPTS  # every try of the one `ids=` lookup
    outcomes = await handle_all(rig, [r for r, _ in rows], Mode.METADATA_ONLY)
    assert outcomes == [Ack("done", "metadata_updated", ("jellyfin_id",))] * 3
