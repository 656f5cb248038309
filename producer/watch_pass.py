"""One `producer watch` pass: the new rows above the high-water mark, a full pass when one is due (or
was interrupted), then the `jellyfin_not_found` dead letters worth replaying (`backfill.core.watch`).

Nothing is left half-done: a page of rows is published and every acknowledgement awaited before the
cursor moves past it (in JetStream, `WatchState`), and the pass checks between pages and between steps
whether it must stop (SIGTERM, or the lease lost); the next pass carries on from the cursor. Rows that
already have a dead letter are left out (`enqueue.leave_out_dead_lettered`); which rows those are comes
from the dead-letter index, brought up to date before each page (one request when nothing was added).

What the keyset above the high-water mark cannot see, the full pass catches: rows with a lower id that
became candidates (a draft published, `jellyfin_public_url` removed; `studio_board` has no
`updated_at` to page by), and rows committed after a higher id was already read (ids come from a
sequence, commits in any order).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from msgspec.structs import replace

from backfill.adapters.jetstream.bus import AckPublisher, JetStream
from backfill.adapters.jetstream.deadletters import dead_letter, refresh_index
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.watchstate import WatchState
from backfill.core.deadletter import DeadLetterIndex, DeadLetterRecord, Entry
from backfill.core.errors import NotFound, UpstreamError
from backfill.core.model import JellyfinItem, Row
from backfill.core.ports import Catalog, MediaLibrary
from backfill.core.watch import (
    CLOCK_MARGIN,
    PassRecord,
    ReplayPolicy,
    Step,
    Trigger,
    WatchCursor,
    replays_due,
    waiting_for_operator,
)
from backfill.core.wire import Header, Mode, YoutubeLinking
from producer.enqueue import EnqueueCounts, Enqueuer, leave_out_dead_lettered
from producer.progress import Progress
from producer.replay import ReplayCounts, Replayer

log = logging.getLogger("producer")


class Guard(Protocol):
    """Asked between pages and steps: may the pass go on (not stopped, the lease still held)?"""

    async def proceed(self) -> bool: ...


@dataclass(frozen=True)
class PassOptions:
    mode: Mode
    version: str
    run_id: str
    youtube: YoutubeLinking | None
    full_every: float
    interval: float
    holder: str


@dataclass
class PassTools:
    js: JetStream
    layout: Layout
    publisher: AckPublisher
    catalog: Catalog
    media: MediaLibrary | None  # None: Jellyfin is not configured here, so it cannot say what changed
    state: WatchState
    index: DeadLetterIndex
    policy: ReplayPolicy


@dataclass
class Tally:
    """What one pass did."""

    counts: dict[Step, EnqueueCounts] = field(
        default_factory=lambda: {step: EnqueueCounts() for step in Step}
    )
    replayed: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, trigger)
    full: bool = False
    interrupted: bool = False

    def record(
        self, options: PassOptions, started: float, finished: float, previous: PassRecord | None
    ) -> PassRecord:
        left_out: Counter[str] = Counter()
        for counts in self.counts.values():
            left_out.update(counts.left_out_by_reason)
        by_trigger: Counter[str] = Counter()
        for (_, trigger), count in self.replayed.items():
            by_trigger[trigger] += count
        completed = previous.completed_at if previous is not None else 0.0
        return PassRecord(
            holder=options.holder,
            started_at=started,
            finished_at=finished,
            interval=options.interval,
            completed_at=completed if self.interrupted else finished,
            full=self.full,
            interrupted=self.interrupted,
            enqueued={step.value: counts.enqueued for step, counts in self.counts.items()},
            already_pending=sum(c.already_pending for c in self.counts.values()),
            failed=sum(c.failed for c in self.counts.values()),
            left_out=dict(sorted(left_out.items())),
            replayed=dict(by_trigger),
        )


async def _one(rows: list[Row]) -> AsyncIterator[list[Row]]:
    yield rows


class WatchPass:
    def __init__(
        self,
        tools: PassTools,
        options: PassOptions,
        guard: Guard,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tools = tools
        self._options = options
        self._guard = guard
        self._clock = clock
        self._enqueuer = Enqueuer(
            tools.publisher,
            tools.layout.prefix,
            options.version,
            options.mode,
            options.run_id,
            options.youtube,
        )
        self._progress = Progress("watch", None, every=60.0)
        self._replays = 0

    async def run(self, previous: PassRecord | None, force_full: bool = False) -> tuple[PassRecord, Tally]:
        """One pass; the record it saved for `producer status` and what it did."""
        tools, tally, started = self._tools, Tally(), self._clock()
        await refresh_index(tools.js, tools.layout, tools.index)
        cursor = await tools.state.cursor()
        high_water = cursor.high_water
        cursor = await self._new_rows(cursor, tally)
        if not tally.interrupted and (force_full or cursor.full_due(self._clock(), self._options.full_every)):
            tally.full = True
            cursor = await self._full(cursor, high_water, tally)
        if not tally.interrupted:
            if await self._guard.proceed():
                cursor = await self._replay_dead_letters(cursor, tally)
            else:
                tally.interrupted = True
        await tools.state.save_cursor(cursor)
        record = tally.record(self._options, started, self._clock(), previous)
        record = replace(
            record,
            high_water=cursor.high_water,
            waiting=waiting_for_operator(tools.index, tools.policy),
        )
        await tools.state.save_pass(record)
        return record, tally

    async def _new_rows(self, cursor: WatchCursor, tally: Tally) -> WatchCursor:
        """Candidates above the high-water mark, page by page; the mark moves after each page."""

        async def save(last: int) -> WatchCursor:
            nonlocal cursor
            cursor = replace(cursor, high_water=last)
            await self._tools.state.save_cursor(cursor)
            return cursor

        finished = await self._enqueue_pages(cursor.high_water, None, tally.counts[Step.NEW_ROW], save)
        tally.interrupted = finished is None
        if finished and not cursor.started:  # the first pass read everything from id 0: a full pass
            cursor = replace(cursor, started=True, last_full_at=self._clock())
            await self._tools.state.save_cursor(cursor)
        return cursor

    async def _full(self, cursor: WatchCursor, through: int, tally: Tally) -> WatchCursor:
        """Every candidate up to the high-water mark the pass started with (or, resuming an interrupted
        full pass, up to the one it started with), the rows above it being the new rows' step."""
        if cursor.full_from is None:
            cursor = replace(cursor, full_from=0, full_through=through)

        async def save(last: int) -> WatchCursor:
            nonlocal cursor
            cursor = replace(cursor, full_from=last)
            await self._tools.state.save_cursor(cursor)
            return cursor

        finished = await self._enqueue_pages(
            cursor.full_from or 0, cursor.full_through, tally.counts[Step.FULL], save
        )
        tally.interrupted = finished is None
        if finished:
            cursor = replace(cursor, full_from=None, last_full_at=self._clock())
            await self._tools.state.save_cursor(cursor)
        return cursor

    async def _enqueue_pages(
        self,
        since: int,
        through: int | None,
        counts: EnqueueCounts,
        save: Callable[[int], Awaitable[WatchCursor]],
    ) -> bool | None:
        """Enqueue the candidates above `since` (up to `through`), saving the last id done after each
        page. True: done; False: stopped at a row that could not be enqueued (the next pass retries
        it); None: interrupted."""
        tools = self._tools
        pages = tools.catalog.stream_candidates(since)
        try:
            async for page in pages:
                rows = page if through is None else [row for row in page if row.id <= through]
                if not rows:
                    return True
                if not await self._guard.proceed():
                    return None
                await refresh_index(tools.js, tools.layout, tools.index)
                kept = leave_out_dead_lettered(rows, tools.index, counts)
                failed_before = len(counts.failed_ids)
                await self._enqueuer.run(_one(kept), counts, self._progress)
                failed = counts.failed_ids[failed_before:]
                await save(min(failed) - 1 if failed else rows[-1].id)
                if failed or len(rows) < len(page):
                    return not failed
        finally:  # stopping mid-way leaves the page reader (and its read-ahead) open: close it now
            closing = getattr(pages, "aclose", None)
            if closing is not None:
                await closing()
        return True

    async def _replay_dead_letters(self, cursor: WatchCursor, tally: Tally) -> WatchCursor:
        """Replay the `jellyfin_not_found` dead letters that could resolve now (see core.watch)."""
        tools, now = self._tools, self._clock()
        entries = [entry for entry in tools.index.latest_per_row() if tools.policy.automatic(entry)]
        if not entries:
            return replace(cursor, library_checked_at=now)
        changed = await self._library_changes(cursor, entries)
        rows: dict[int, Row] = {}
        if changed:
            wanted = sorted({entry.row_id for entry in entries if entry.row_id is not None})
            rows = {row.id: row for row in await tools.catalog.fetch_rows(wanted)}
        chosen = replays_due(entries, rows, changed, tools.policy, now)
        if changed is not None:
            cursor = replace(cursor, library_checked_at=now)
        if chosen:
            await self._replay(chosen, tally)
        return cursor

    async def _library_changes(
        self, cursor: WatchCursor, entries: Sequence[Entry]
    ) -> list[JellyfinItem] | None:
        """What Jellyfin added or saved since it was last asked (or since the oldest of these dead
        letters), a margin earlier for the clocks; None when it cannot say (or is not configured)."""
        media = self._tools.media
        if media is None:
            return None
        oldest = min(
            (entry.stored_at for entry in entries if entry.stored_at is not None), default=self._clock()
        )
        since = (cursor.library_checked_at or oldest) - CLOCK_MARGIN
        try:
            return await media.changed_since(datetime.fromtimestamp(since, UTC))
        except UpstreamError as exc:
            log.warning(
                "Jellyfin could not say what changed; replaying by backoff", extra={"error": str(exc)}
            )
            return None

    async def _replay(self, chosen: list[tuple[Entry, Trigger]], tally: Tally) -> None:
        tools = self._tools
        triggers = {entry.seq: trigger for entry, trigger in chosen}
        records: list[DeadLetterRecord] = []
        for entry, _ in chosen:
            with contextlib.suppress(NotFound):  # replayed or purged by someone else meanwhile
                records.append(await dead_letter(tools.js, tools.layout, entry.seq))

        def replayed(record: DeadLetterRecord) -> None:
            tools.index.discard(record.seq)
            tally.replayed[record.reason, triggers[record.seq].value] += 1

        self._replays += 1
        replayer = Replayer(
            tools.js,
            tools.publisher,
            tools.layout,
            f"{self._options.run_id}-replay-{self._replays}",
            headers_for=lambda record: {Header.AUTO_REPLAYS: str(record.auto_replays + 1)},
            on_replayed=replayed,
        )
        counts = ReplayCounts()
        await replayer.replay(records, counts, dry_run=False)
        for note in counts.notes:
            log.info("dead letter not replayed: %s", note)
