"""`producer watch`'s passes against a real nats-server and the catalog and Jellyfin doubles over loopback:
the high-water mark, the full pass, rows already dead-lettered left out, an interrupted pass finished
by the next, and the `jellyfin_not_found` dead letters replayed when Jellyfin's library changed (or after
a backoff when it cannot say), up to a cap; what needs a human waits for one."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from backfill.adapters.jellyfin import JellyfinClient
from backfill.adapters.jetstream.bus import AckPublisher, PubStatus
from backfill.adapters.jetstream.layout import Layout, build_layout, ensure_layout
from backfill.adapters.jetstream.watchstate import WatchState
from backfill.adapters.postgrest import PostgrestCatalog
from backfill.adapters.transport import HttpClient
from backfill.core.deadletter import DeadLetterIndex, Failure, dead_letter_headers
from backfill.core.watch import PassRecord, ReplayPolicy, Step, Trigger
from backfill.core.wire import Header, Mode, dlq_subject, encode_request, msg_id, new_request, request_subject
from backfill.settings import NatsSettings
from backfill_doubles.jellyfin import JellyfinDouble
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.serve import serve
from producer.watch_pass import PassOptions, PassTools, Tally, WatchPass

KEY, USER, SERVER = "jf-key", "ab" * 16, "cd" * 16
STAMP = "2026-11-30T00:00:00Z"
POLICY = ReplayPolicy(max_replays=3, backoff=100.0, backoff_max=1000.0)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Go:
    """A guard that lets the pass go on `allowed` times, then asks it to stop (SIGTERM between steps)."""

    def __init__(self, allowed: int | None = None) -> None:
        self.allowed = allowed

    async def proceed(self) -> bool:
        if self.allowed is None:
            return True
        self.allowed -= 1
        return self.allowed >= 0


@dataclass
class Rig:
    nc: NatsClient
    layout: Layout
    db: PostgrestDouble
    jellyfin: JellyfinDouble
    tools: PassTools
    clock: Clock
    previous: PassRecord | None = None
    passes: int = 0

    async def run(self, guard: Go | None = None, full: bool = False) -> tuple[PassRecord, Tally]:
        self.passes += 1
        run_id = f"watch-test-{self.passes}"  # each pass has its own run id, as the watcher gives it
        options = PassOptions(Mode.REPUBLISH, "v1", run_id, None, full_every=3600, interval=5, holder="w")
        record, tally = await WatchPass(self.tools, options, guard or Go(), self.clock).run(
            self.previous, full
        )
        self.previous = record
        return record, tally

    async def queued(self) -> set[int]:
        """Rows with a request waiting in the work stream."""
        info = await self.nc.jetstream().stream_info(self.layout.stream, subjects_filter=">")
        return {int(subject.rsplit(".", 1)[1]) for subject in info.state.subjects or {}}

    async def stored(self) -> int:
        """Every request the work stream ever stored (its last sequence)."""
        return int((await self.nc.jetstream().stream_info(self.layout.stream)).state.last_seq)

    async def work_done(self) -> None:
        """As if workers had enriched every row waiting in the work stream."""
        for row_id in await self.queued():
            self.db.rows[row_id]["meta"] = {**self.db.rows[row_id]["meta"], "jellyfin_public_url": "u"}
        await self.nc.jetstream().purge_stream(self.layout.stream)

    def row(self, title: str, **meta: Any) -> int:
        return int(
            self.db.add_row(title=title, status="published", content_url="s3://outputs/x.mp4", meta=meta)[
                "id"
            ]
        )

    async def dead_letter(self, row_id: int, reason: str, replays: int | None = None) -> int:
        original = request_subject(self.layout.prefix, row_id)
        failure = Failure(
            reason, "why", original, self.layout.stream, row_id, 3, STAMP, STAMP, "w1", "v1", row_id
        )
        headers = {Header.MSG_ID: msg_id(row_id, "run-1")}
        if replays is not None:
            headers[Header.AUTO_REPLAYS] = str(replays)
        body = encode_request(new_request(row_id, "v1", Mode.METADATA_ONLY, "run-1"))
        result = await AckPublisher(self.nc).publish(
            dlq_subject(self.layout.prefix, reason), body, dead_letter_headers(failure, headers)
        )
        assert result.status is PubStatus.STORED and result.seq is not None
        return result.seq

    async def dead_letters(self) -> int:
        return int((await self.nc.jetstream().stream_info(self.layout.dlq_stream)).state.messages)

    def catalog_reads(self) -> int:
        return len([r for r in self.db.requests if r[0] == "GET"])


@pytest.fixture
async def rig(nc: NatsClient, layout_env: dict[str, str], http: HttpClient) -> AsyncIterator[Rig]:
    layout = build_layout(NatsSettings.model_validate(layout_env))
    await ensure_layout(nc.jetstream(), layout)
    db = PostgrestDouble("svc")
    jellyfin = JellyfinDouble(KEY, USER, SERVER)
    async with serve(db.app()) as db_url, serve(jellyfin.app()) as jf_url:
        state = await WatchState.open(nc.jetstream(), layout_env["BACKFILL_WATCH_BUCKET"], layout)
        tools = PassTools(
            nc.jetstream(),
            layout,
            AckPublisher(nc),
            PostgrestCatalog(http, db_url, "svc", page_size=2),
            JellyfinClient(http, jf_url, KEY, USER),
            state,
            DeadLetterIndex(),
            POLICY,
        )
        yield Rig(nc, layout, db, jellyfin, tools, Clock())
        await tools.publisher.close()


async def test_a_first_pass_enqueues_every_candidate_and_marks_the_highest(rig: Rig) -> None:
    """From id 0 every candidate (not drafts, not enriched rows), in pages; the mark is the last id."""
    rows = [rig.row(f"Film {n}") for n in range(5)]
    rig.db.add_row(title="Draft", status="draft")
    rig.db.add_row(title="Done", status="published", meta={"jellyfin_public_url": "https://x"})
    record, _ = await rig.run()
    assert await rig.queued() == set(rows)
    assert record.enqueued == {Step.NEW_ROW.value: 5, Step.FULL.value: 0}
    assert record.high_water == rows[-1] and not record.interrupted
    cursor = await rig.tools.state.cursor()
    assert cursor.started and cursor.last_full_at > 0 and cursor.high_water == rows[-1]


async def test_a_pass_with_nothing_new_reads_one_page_and_stores_nothing(rig: Rig) -> None:
    """Above the mark nothing: one catalog read (however many rows lie below), nothing stored."""
    for n in range(9):
        rig.row(f"Film {n}")
    await rig.run()
    await rig.work_done()
    stored, reads = await rig.stored(), rig.catalog_reads()
    record, _ = await rig.run()
    assert rig.catalog_reads() - reads == 1
    assert await rig.stored() == stored
    assert record.enqueued[Step.NEW_ROW.value] == 0


async def test_new_rows_above_the_mark_are_enqueued_by_the_next_pass(rig: Rig) -> None:
    old = [rig.row(f"Old {n}") for n in range(3)]
    await rig.run()
    await rig.work_done()
    new = [rig.row(f"New {n}") for n in range(3)]
    record, _ = await rig.run()
    assert await rig.queued() == set(new)
    assert record.high_water == new[-1] > old[-1]


async def test_rows_with_a_dead_letter_are_left_out_and_counted_by_reason(rig: Rig) -> None:
    """A candidate that already has a dead letter would only fail again: left out, counted by reason."""
    ok, lost, twin = rig.row("Fine"), rig.row("Lost"), rig.row("Twin")
    await rig.dead_letter(lost, "jellyfin_not_found")
    await rig.dead_letter(twin, "ambiguous_match")
    record, _ = await rig.run()
    assert await rig.queued() == {ok}
    assert record.left_out == {"ambiguous_match": 1, "jellyfin_not_found": 1}
    assert record.high_water == twin  # left out is handled: the mark moves past them
    assert record.waiting == {"ambiguous_match": 1}


async def test_a_full_pass_catches_rows_that_became_candidates_below_the_mark(rig: Rig) -> None:
    """A draft published later and a row whose Jellyfin URL was removed: only the full pass sees them."""
    draft = int(rig.db.add_row(title="Draft", status="draft")["id"])
    done = int(rig.db.add_row(title="Done", status="published", meta={"jellyfin_public_url": "u"})["id"])
    top = rig.row("Top")
    await rig.run()
    await rig.work_done()
    rig.db.rows[draft]["status"] = "published"
    rig.db.rows[done]["meta"] = {}
    record, _ = await rig.run()
    assert await rig.queued() == set() and not record.full
    record, _ = await rig.run(full=True)
    assert await rig.queued() == {draft, done}
    assert record.full and record.enqueued[Step.FULL.value] == 2 and record.high_water == top


async def test_a_full_pass_is_due_after_full_every(rig: Rig) -> None:
    rig.row("A")
    await rig.run()
    await rig.work_done()
    low = int(rig.db.add_row(title="Late", status="draft")["id"])
    rig.db.rows[low]["status"] = "published"
    rig.clock.offset = 3601
    record, _ = await rig.run()
    assert record.full and await rig.queued() == {low}


async def test_an_interrupted_pass_is_finished_by_the_next_and_nothing_is_enqueued_twice(rig: Rig) -> None:
    """Stopped after its first page (2 rows), the pass saved where it was; the next carries on from
    there, and the work stream stored each row exactly once."""
    rows = [rig.row(f"Film {n}") for n in range(7)]
    record, tally = await rig.run(Go(allowed=1))
    assert tally.interrupted and record.interrupted and record.high_water == rows[1]
    assert await rig.queued() == set(rows[:2])
    record, tally = await rig.run()
    assert not tally.interrupted and record.high_water == rows[-1]
    assert await rig.queued() == set(rows) and await rig.stored() == len(rows)


async def test_an_interrupted_full_pass_resumes_where_it_stopped(rig: Rig) -> None:
    rows = [rig.row(f"Film {n}") for n in range(6)]
    await rig.run()
    await rig.work_done()
    for row in rows:  # every row became a candidate again below the mark
        rig.db.rows[row]["meta"] = {}
    _, tally = await rig.run(Go(allowed=1), full=True)  # one page of the full pass, then SIGTERM
    assert tally.interrupted
    cursor = await rig.tools.state.cursor()
    assert cursor.full_from == rows[1] and cursor.full_through == rows[-1]
    record, _ = await rig.run()  # not asked for a full pass: it finishes the interrupted one
    assert record.full and (await rig.tools.state.cursor()).full_from is None
    assert await rig.queued() == set(rows) and await rig.stored() == 2 * len(rows)


async def test_a_not_found_dead_letter_is_replayed_once_its_item_appears(rig: Rig) -> None:
    """Nothing relevant changed: left alone. The item added to Jellyfin: replayed, counted once, its
    request carrying the automatic replay count; the dead letter gone."""
    row = rig.row("Late Arrival", production_year=2024)
    rig.jellyfin.add_item("Something Else")
    await rig.dead_letter(row, "jellyfin_not_found")
    record, _ = await rig.run()
    assert await rig.queued() == set() and record.replayed == {}
    rig.jellyfin.add_item("Late Arrival", year=2024)
    record, tally = await rig.run()
    assert await rig.queued() == {row}
    assert record.replayed == {Trigger.LIBRARY_CHANGED.value: 1}
    assert tally.replayed == {("jellyfin_not_found", "library_changed"): 1}
    assert await rig.dead_letters() == 0
    msg = await rig.nc.jetstream().get_last_msg(rig.layout.stream, request_subject(rig.layout.prefix, row))
    assert msg.headers is not None and msg.headers[Header.AUTO_REPLAYS] == "1"


async def test_an_item_for_another_year_or_title_replays_nothing(rig: Rig) -> None:
    row = rig.row("Late Arrival", production_year=2024)
    await rig.dead_letter(row, "jellyfin_not_found")
    await rig.run()
    rig.jellyfin.add_item("Late Arrival", year=1999)
    rig.jellyfin.add_item("Early Departure", year=2024)
    record, _ = await rig.run()
    assert record.replayed == {} and await rig.dead_letters() == 1


async def test_what_needs_a_human_is_never_replayed_and_waits_for_an_operator(rig: Rig) -> None:
    """Ambiguous, invalid, rejected and exhausted dead letters stay, whatever Jellyfin does; a not-found
    row past the cap waits too."""
    reasons = ["ambiguous_match", "invalid_payload", "upstream_rejected", "retries_exhausted"]
    rows = {reason: rig.row(f"Film {reason}") for reason in reasons}
    for reason, row in rows.items():
        await rig.dead_letter(row, reason)
    capped = rig.row("Capped Film")
    await rig.dead_letter(capped, "jellyfin_not_found", replays=POLICY.max_replays)
    for title in ["Capped Film", *(f"Film {reason}" for reason in reasons)]:
        rig.jellyfin.add_item(title)
    record, _ = await rig.run()
    assert record.replayed == {} and await rig.dead_letters() == 5
    assert record.waiting == dict.fromkeys([*reasons, "jellyfin_not_found"], 1)


async def test_when_jellyfin_cannot_say_a_row_is_replayed_after_its_backoff(rig: Rig) -> None:
    """Jellyfin failing: no replay before the backoff, one after it; the next wait doubles."""
    rig.jellyfin.fail_rate = 1.0
    row = rig.row("Lost Film")
    await rig.dead_letter(row, "jellyfin_not_found", replays=1)  # already replayed once: waits 2 x 100 s
    rig.clock.offset = 150
    record, _ = await rig.run()
    assert record.replayed == {}
    rig.clock.offset = 201
    record, _ = await rig.run()
    assert record.replayed == {Trigger.BACKOFF.value: 1} and await rig.queued() == {row}


async def test_without_jellyfin_the_backoff_alone_decides(rig: Rig) -> None:
    rig.tools.media = None
    row = rig.row("Lost Film")
    await rig.dead_letter(row, "jellyfin_not_found")
    record, _ = await rig.run()
    assert record.replayed == {}
    rig.clock.offset = 101
    record, _ = await rig.run()
    assert record.replayed == {Trigger.BACKOFF.value: 1} and await rig.queued() == {row}
