"""One request through RowProcessor against the doubles over loopback: outcomes for every failure kind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backfill.adapters.transport import READ_ATTEMPTS
from backfill.core.outcome import Ack, DeadLetter, Retry
from backfill.core.pace import Turn
from backfill.core.wire import Mode, new_request
from backfill_doubles.postgrest_query import PostgrestError
from tests.support.pipeline import Rig, pipeline_rig


@pytest.fixture
async def rig(nats_url: str, contracts_dir: Path) -> AsyncIterator[Rig]:
    async with pipeline_rig(nats_url, contracts_dir, timeout=0.5) as built:
        yield built


def add(rig: Rig, name: str = "Night Drive", content_url: str = "s3://outputs/a.mp4", **meta: object) -> int:
    item = rig.jellyfin.add_item(name, run_time_ticks=600_000_000)
    meta = {"jellyfin_item_id": item["Id"], **meta} if "no_id" not in meta else {}
    return int(rig.db.add_row(title=name, status="published", content_url=content_url, meta=meta)["id"])


async def handle(rig: Rig, row_id: int, mode: Mode = Mode.REPUBLISH) -> object:
    return await rig.processor.handle(new_request(row_id, "2025-10-14", mode, "run-t"), attempt=1)


async def test_happy_path_republishes_then_merges(rig: Rig) -> None:
    """Done: one envelope, seen on NATS and recorded in the ledger; the row carries its id."""
    row_id = add(rig)
    assert await handle(rig, row_id) == Ack("done", "republished", ("jellyfin_id",))
    (envelope,) = rig.agent.envelopes
    assert rig.db.rows[row_id]["meta"]["backfill_event_id"] == envelope["id"]
    assert rig.ledger.envelopes == {envelope["correlation_id"]: envelope["id"]}


async def test_jellyfin_500_is_retried_and_nothing_is_written(rig: Rig) -> None:
    """A Jellyfin 5xx that outlasts the read's own tries gives Retry with a delay; no event, no row change."""
    row_id = add(rig)
    rig.jellyfin.fail_next = READ_ATTEMPTS
    outcome = await handle(rig, row_id)
    assert isinstance(outcome, Retry)
    assert "jellyfin" in outcome.error
    assert rig.agent.envelopes == []
    assert "backfill_version" not in rig.db.rows[row_id]["meta"]


async def test_jellyfin_hang_times_out_into_a_retry(rig: Rig) -> None:
    """A Jellyfin that never answers within the client timeout is a retry, not a stuck worker."""
    row_id = add(rig)
    rig.jellyfin.hang_rate, rig.jellyfin.hang_seconds = 1.0, 2.0
    outcome = await handle(rig, row_id)
    assert isinstance(outcome, Retry)


async def test_a_passing_agent_zero_503_costs_a_request_not_a_delivery(rig: Rig) -> None:
    """One "NATS controller not ready" (checked before Agent Zero publishes anything) is asked again
    within the delivery: done, one envelope."""
    row_id = add(rig)
    rig.agent.fail_next = 1
    assert await handle(rig, row_id) == Ack("done", "republished", ("jellyfin_id",))
    assert len(rig.agent.envelopes) == 1 and rig.agent.injected["fail"] == 1


async def test_agent_zero_503_that_outlasts_the_request_is_retried_and_the_row_is_not_marked(
    rig: Rig,
) -> None:
    """Not ready on every try while its health says NATS is connected (a passing fault, not an outage):
    Retry, the circuit stays closed, and the row is not marked as republished."""
    row_id = add(rig)
    rig.agent.fail_next = READ_ATTEMPTS
    outcome = await handle(rig, row_id)
    assert isinstance(outcome, Retry)
    assert "agent_zero" in outcome.error and "not ready" in outcome.error
    assert not rig.circuit.open
    assert "jellyfin_public_url" not in rig.db.rows[row_id]["meta"]


async def test_invalid_payload_is_dead_lettered_before_reaching_agent_zero(rig: Rig) -> None:
    """A non-s3 artifact fails the contract locally; Agent Zero never sees it."""
    row_id = add(rig, content_url="https://cdn.example.org/a.mp4")
    outcome = await handle(rig, row_id)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "invalid_payload"
    assert rig.agent.envelopes == []
    assert rig.agent.rejected == []


async def test_all_zero_id_is_never_sent_and_search_takes_over(rig: Rig) -> None:
    """meta.jellyfin_item_id of all zeros would fetch the root folder: it is skipped for a title search."""
    item = rig.jellyfin.add_item("Quiet Harbor", run_time_ticks=10_000_000)
    row_id = int(
        rig.db.add_row(
            title="Quiet Harbor",
            status="published",
            content_url="s3://o/q.mp4",
            meta={"jellyfin_item_id": "0" * 32},
        )["id"]
    )
    assert await handle(rig, row_id, Mode.METADATA_ONLY) == Ack(
        "done", "metadata_updated", ("jellyfin_search",)
    )
    assert rig.db.rows[row_id]["meta"]["jellyfin_item_id"] == item["Id"]
    assert not any("0" * 32 in path for _, path, _ in rig.jellyfin.requests)


@pytest.mark.parametrize(
    ("status", "meta", "reason"),
    [("draft", {}, "not_published"), ("published", {"jellyfin_public_url": "https://x"}, "already_enriched")],
)
async def test_rows_that_are_not_candidates_any_more_are_skipped(
    rig: Rig, status: str, meta: dict, reason: str
) -> None:
    """A row that changed under us since the enqueue is acked as skipped and not written."""
    row_id = int(rig.db.add_row(title="x", status=status, content_url="s3://o/x.mp4", meta=meta)["id"])
    assert await handle(rig, row_id) == Ack("skipped", reason)
    assert await handle(rig, 424242) == Ack("skipped", "row_missing")
    assert rig.db.calls["rpc"] == 0


async def test_a_meta_that_is_not_an_object_is_dead_lettered_untouched(rig: Rig) -> None:
    """Merging into an array would corrupt it: dead letter invalid_payload, no event, row as it was."""
    item = rig.jellyfin.add_item("Odd Row", run_time_ticks=600_000_000)
    row = rig.db.add_row(title="Odd Row", status="published", content_url="s3://o/a.mp4", meta=[item["Id"]])
    outcome = await handle(rig, int(row["id"]))
    assert isinstance(outcome, DeadLetter) and outcome.reason == "invalid_payload"
    assert "meta is an array" in outcome.detail
    assert not rig.agent.envelopes
    assert rig.db.rows[int(row["id"])]["meta"] == [item["Id"]]


async def test_a_meta_turned_into_an_array_under_the_merge_is_retried_then_dead_lettered(rig: Rig) -> None:
    """Another writer replaces meta with an array between our read and our merge: the merge leaves it
    alone (no corrupted row), the message is retried, and the retry dead-letters it as the read shows."""
    row_id = add(rig, "Changed Under Us")

    def replace_meta(touched: int) -> None:
        if touched == row_id:
            rig.db.rows[row_id]["meta"] = ["replaced"]

    rig.db.before_write = replace_meta
    first = await handle(rig, row_id, Mode.METADATA_ONLY)
    assert isinstance(first, Retry)
    assert f"row {row_id} was not merged: meta is an array" in first.error
    rig.db.before_write = None
    second = await handle(rig, row_id, Mode.METADATA_ONLY)
    assert isinstance(second, DeadLetter) and second.reason == "invalid_payload"
    assert rig.db.rows[row_id]["meta"] == ["replaced"]


async def test_a_merge_failing_after_the_publish_never_publishes_twice(rig: Rig) -> None:
    """Agent Zero accepted the event, then the merge failed: the redelivery merges the recorded event id
    instead of sending a second Discord-bound event."""
    row_id = add(rig)

    def database_down(_row_id: int) -> None:
        raise PostgrestError(503, "PGRST001", "Database client error. Retrying the connection.")

    rig.db.before_write = database_down
    request = new_request(row_id, "2025-10-14", Mode.REPUBLISH, "run-t")
    assert isinstance(await rig.processor.handle(request, attempt=1), Retry)
    (envelope,) = rig.agent.envelopes
    rig.db.before_write = None
    assert await rig.processor.handle(request, attempt=2) == Ack("done", "republished", ("jellyfin_id",))
    assert len(rig.agent.envelopes) == 1
    assert rig.db.rows[row_id]["meta"]["backfill_event_id"] == envelope["id"]


async def test_a_jellyfin_fault_that_passes_within_the_read_costs_no_retry(rig: Rig) -> None:
    row_id = add(rig)
    rig.jellyfin.fail_next = 1  # (this rig's 0.5 s request timeout leaves room for one more try)
    assert await handle(rig, row_id) == Ack("done", "republished", ("jellyfin_id",))
    assert rig.jellyfin.injected


async def test_a_retry_says_how_long_it_waited_for_the_pace(rig: Rig) -> None:
    """That wait is not retrying: the consumer leaves it out of the retry budget."""

    class SlowPace:
        """Hands out the token only when the test says so, and times how long it held it back."""

        waiting = 0

        def __init__(self) -> None:
            self.asked, self.granted = asyncio.Event(), asyncio.Event()
            self.held_for = 0.0

        def headroom(self) -> int:
            return 1

        def turn(self) -> Turn:
            return Turn(self)

        async def acquire_token(self) -> None:
            started = time.monotonic()
            self.asked.set()
            await self.granted.wait()
            self.held_for = time.monotonic() - started

        def close(self) -> None:
            return None

    pace = SlowPace()
    rig.processor._pace = pace
    row_id = add(rig)
    rig.agent.fail_next = READ_ATTEMPTS
    handling = asyncio.ensure_future(handle(rig, row_id))
    await asyncio.wait_for(pace.asked.wait(), 10)  # the republish is waiting for its token
    pace.granted.set()
    outcome = await asyncio.wait_for(handling, 10)
    assert isinstance(outcome, Retry)
    assert outcome.paced >= pace.held_for > 0  # at least the time the pace held it back
