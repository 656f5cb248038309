"""`producer dlq replay`: dead letters re-enqueued, each removed only once its enqueue was acknowledged.

Replay re-enqueues on `<prefix>.request.<row_id>`; a failed or skipped replay leaves the dead letter
where it is. When the selection is every dead letter of a subject filter (`--all`, `--reason`), the
replayed prefix of the stream is removed with one purge per batch (`seq` = first not yet replayed, same
filter): every message below it was read and replayed by this run, and later dead letters always get
higher sequences. Past the first dead letter kept, and for `--seq` / `--ids`, each replayed one is
deleted on its own. Reading, purging and deleting are the JetStream adapter's
(`backfill.adapters.jetstream.deadletters`, `bus.remove_message`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backfill.adapters.jetstream.bus import AckPublisher, JetStream, PubResult, PubStatus, remove_message
from backfill.adapters.jetstream.deadletters import purge_below
from backfill.adapters.jetstream.layout import Layout
from backfill.core.deadletter import DeadLetterRecord
from backfill.core.errors import BusError
from backfill.core.wire import (
    Header,
    InvalidMessage,
    decode_request,
    encode_request,
    msg_id,
    new_request,
)
from backfill.core.wire import request_subject as work_subject

SETTLE_BATCH = 512  # publishes awaited behind the reader; also how often the replayed prefix is purged
log = logging.getLogger("producer")


@dataclass(frozen=True)
class ReplaySelection:
    all: bool = False
    reason: str | None = None
    seqs: frozenset[int] = frozenset()
    row_ids: frozenset[int] = frozenset()

    def matches(self, record: DeadLetterRecord) -> bool:
        if self.seqs:
            return record.seq in self.seqs
        if self.row_ids:
            return record.row_id in self.row_ids
        return self.all or record.reason == self.reason


@dataclass
class ReplayCounts:
    replayed: int = 0
    skipped: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.notes) < 50:
            self.notes.append(text)


# A record and either its publish's future or, when it cannot be replayed, why.
_Settling = tuple[DeadLetterRecord, "asyncio.Future[PubResult] | str"]


class Replayer:
    def __init__(
        self,
        js: JetStream,
        publisher: AckPublisher,
        layout: Layout,
        run_id: str,
        purge_filter: str | None = None,
    ) -> None:
        """`purge_filter`: the subject filter the records were read with, when every record read is
        selected for replay; enables removing the replayed prefix with a purge."""
        self._js = js
        self._publisher = publisher
        self._layout = layout
        self._run_id = run_id
        self._purge_filter = purge_filter
        self._prefix_unbroken = purge_filter is not None
        self._prefix_end: int | None = None  # highest seq of the unbroken replayed prefix
        self._purged_below = 0
        self._deletes: set[asyncio.Task[None]] = set()
        self._delete_slots = asyncio.Semaphore(256)

    def _request_for(self, record: DeadLetterRecord) -> tuple[int, bytes] | str:
        """(row id, the fresh request's body), or why the dead letter cannot be replayed."""
        original = record.headers.get(Header.ORIGINAL_SUBJECT, "")
        try:
            request = decode_request(record.data, original, self._layout.prefix)
        except InvalidMessage as exc:
            return f"seq {record.seq}: not replayable ({exc}); purge it"
        fresh = new_request(
            request.row_id, request.backfill_version, request.mode, self._run_id, youtube=request.youtube
        )
        return request.row_id, encode_request(fresh)

    async def replay(
        self,
        records: Iterable[DeadLetterRecord] | AsyncIterator[DeadLetterRecord],
        counts: ReplayCounts,
        dry_run: bool,
    ) -> None:
        """Reading and publishing go on while earlier publishes are settled (acks awaited in order)."""
        queue: asyncio.Queue[_Settling | None] = asyncio.Queue(maxsize=SETTLE_BATCH)
        settler = asyncio.create_task(self._settle_all(queue, counts))
        try:
            async for record in _aiter(records):
                built = self._request_for(record)
                if isinstance(built, str):
                    await queue.put((record, built))  # not replayable: settled in order as a skip
                    continue
                if dry_run:
                    counts.replayed += 1
                    continue
                row_id, body = built
                subject = work_subject(self._layout.prefix, row_id)
                headers = {Header.MSG_ID: msg_id(row_id, self._run_id), Header.RUN_ID: self._run_id}
                await queue.put((record, await self._publisher.submit(subject, body, headers)))
        finally:
            await queue.put(None)
            await settler
        if self._deletes:
            await asyncio.gather(*self._deletes)

    async def _settle_all(self, queue: asyncio.Queue[_Settling | None], counts: ReplayCounts) -> None:
        settled = 0
        while (item := await queue.get()) is not None:
            record, outcome = item
            if isinstance(outcome, str):
                self._prefix_unbroken = False
                counts.skipped += 1
                counts.note(outcome)
            elif self._settle_one(record, await outcome, counts):
                await self._delete_slots.acquire()
                task = asyncio.create_task(self._delete(record.seq))
                self._deletes.add(task)
                task.add_done_callback(self._deletes.discard)
            settled += 1
            if settled % SETTLE_BATCH == 0:
                await self._purge_prefix()
        await self._purge_prefix()

    def _settle_one(self, record: DeadLetterRecord, result: PubResult, counts: ReplayCounts) -> bool:
        """Count one answered publish; True when its dead letter must be deleted on its own."""
        if result.status is PubStatus.STORED:
            counts.replayed += 1
            if self._prefix_unbroken:
                self._prefix_end = record.seq  # removed by the next prefix purge
                return False
            return True
        self._prefix_unbroken = False
        if result.status in (PubStatus.ALREADY_PENDING, PubStatus.DUPLICATE):
            counts.skipped += 1
            counts.note(f"seq {record.seq}: row {record.row_id} already pending; dead letter kept")
        else:
            counts.failed += 1
            counts.note(f"seq {record.seq}: enqueue failed ({result.error}); dead letter kept")
        return False

    async def _purge_prefix(self) -> None:
        """Remove every dead letter below the first one not replayed (all of them replayed here)."""
        if self._purge_filter is None or self._prefix_end is None or self._prefix_end < self._purged_below:
            return
        below = self._prefix_end + 1
        try:
            await purge_below(self._js, self._layout, below, self._purge_filter)
        except BusError as exc:
            log.warning(
                "replayed, but the dead letters could not be removed",
                extra={"below_seq": below, "error": str(exc)},
            )
            return
        self._purged_below = below

    async def _delete(self, seq: int) -> None:
        try:
            await remove_message(self._js, self._layout.dlq_stream, seq)  # False: someone got there first
        except BusError as exc:
            log.warning(
                "replayed, but the dead letter could not be deleted", extra={"seq": seq, "error": str(exc)}
            )
        finally:
            self._delete_slots.release()


async def _aiter(
    records: Iterable[DeadLetterRecord] | AsyncIterator[DeadLetterRecord],
) -> AsyncIterator[DeadLetterRecord]:
    if hasattr(records, "__aiter__"):
        async for record in records:
            yield record
    else:
        for record in records:
            yield record


def now_utc() -> datetime:
    return datetime.now(UTC)
