"""`producer dlq`: inspect, replay and purge the dead letters.

Reading uses an ephemeral consumer that acknowledges nothing, so listing never changes the stream.
Replay re-enqueues on `<prefix>.request.<row_id>` and deletes a dead letter only after its enqueue
was acknowledged; a failed or skipped replay leaves the dead letter where it is. When the selection is
every dead letter of a subject filter (`--all`, `--reason`), the replayed prefix of the stream is
removed with one purge per batch (`seq` = first not yet replayed, same filter): every message below it
was read and replayed by this run, and later dead letters always get higher sequences. Past the first
dead letter kept, and for `--seq` / `--ids`, each replayed one is deleted on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from backfill.adapters.jetstream import natspy
from backfill.adapters.jetstream.bus import AckPublisher, PubResult, PubStatus, remove_message
from backfill.adapters.jetstream.layout import Layout
from backfill.core.errors import BusError
from backfill.core.wire import (
    Header,
    InvalidMessage,
    decode_request,
    dlq_filter,
    encode_request,
    msg_id,
    new_request,
    parse_count,
    parse_id,
)
from backfill.core.wire import request_subject as work_subject

FETCH_BATCH = 1000
READ_TIMEOUT = 10.0
SETTLE_BATCH = 512  # publishes awaited behind the reader; also how often the replayed prefix is purged
log = logging.getLogger("producer")


def text_headers(headers: Mapping[Any, Any] | None) -> dict[str, str]:
    """Headers as plain strings: nats-py hands a non-ASCII value over as an `email.header.Header`."""
    return {str(key): str(value) for key, value in (headers or {}).items()}


@dataclass(frozen=True)
class DeadLetterRecord:
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes
    stored_at: datetime | None

    @property
    def reason(self) -> str:
        return self.headers.get(Header.REASON, self.subject.rsplit(".", 1)[-1])

    @property
    def row_id(self) -> int | None:
        return parse_id(self.headers.get(Header.ROW_ID))

    def age_seconds(self, now: datetime) -> float | None:
        return (now - self.stored_at).total_seconds() if self.stored_at else None

    def summary(self, now: datetime) -> dict[str, Any]:
        age = self.age_seconds(now)
        return {
            "seq": self.seq,
            "row_id": self.row_id,
            "reason": self.reason,
            "attempts": parse_count(self.headers.get(Header.DELIVERIES)) or 0,
            "age_seconds": round(age) if age is not None else None,
            "error": self.headers.get(Header.DETAIL, ""),
        }

    def full(self, now: datetime) -> dict[str, Any]:
        return {
            **self.summary(now),
            "subject": self.subject,
            "headers": self.headers,
            "body": self.data.decode("utf-8", errors="replace"),
        }


class _PullBatch:
    """Messages answering one pull request, collected by a subscription callback (no task per message)."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.msgs: list[Msg] = []
        self.done = asyncio.Event()

    def add(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status"):  # 404 no messages / 408: nothing more comes
            self.done.set()
            return
        self.msgs.append(msg)
        if len(self.msgs) >= self.want:
            self.done.set()


async def read_dead_letters(
    js: JetStreamContext, layout: Layout, reason: str | None = None
) -> AsyncIterator[DeadLetterRecord]:
    """Every dead letter (optionally of one reason), oldest first, without changing the stream.

    An ephemeral consumer that acknowledges nothing, read with `no_wait` pull requests of up to
    FETCH_BATCH on our own inbox. nats-py's `fetch` spends a task, a uuid and a timer on every message
    (a quarter of the replay's CPU); a subscription callback collects a whole batch instead.
    """
    subject = f"{layout.prefix}.dlq.{reason}" if reason else dlq_filter(layout.prefix)
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=subject,
        inactive_threshold=30.0,
    )
    try:
        info = await js.add_consumer(layout.dlq_stream, config)
    except (NatsError, TimeoutError) as exc:
        raise BusError(f"cannot read {layout.dlq_stream}: {exc or type(exc).__name__}") from exc
    # Exactly the dead letters there now, in order: those added while reading (a replay's own rows
    # failing again) are not read, so a replay ends and never replays its own output.
    left = info.num_pending or 0
    nc = natspy.connection(js)  # pull requests are plain publishes on the context's connection
    next_subject = f"{natspy.api_prefix(js)}.CONSUMER.MSG.NEXT.{layout.dlq_stream}.{info.name}"
    inbox = nc.new_inbox()
    batch = _PullBatch(0)

    async def collect(msg: Msg) -> None:
        batch.add(msg)

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        while left > 0:
            batch = _PullBatch(min(FETCH_BATCH, left))
            request = {"batch": batch.want, "no_wait": True}
            await nc.publish(next_subject, json.dumps(request).encode(), reply=inbox)
            try:
                await asyncio.wait_for(batch.done.wait(), timeout=READ_TIMEOUT)
            except TimeoutError as exc:
                raise BusError(f"reading {layout.dlq_stream}: no answer within {READ_TIMEOUT}s") from exc
            if not batch.msgs:
                return
            left -= len(batch.msgs)
            for msg in batch.msgs:
                meta = msg.metadata
                yield DeadLetterRecord(
                    meta.sequence.stream, msg.subject, text_headers(msg.headers), msg.data, meta.timestamp
                )
    finally:
        with contextlib.suppress(NatsError, TimeoutError):
            await sub.unsubscribe()
        with contextlib.suppress(NatsError, TimeoutError):
            await js.delete_consumer(layout.dlq_stream, info.name)  # else it lingers 30 s


async def show(js: JetStreamContext, layout: Layout, seq: int) -> DeadLetterRecord | None:
    try:
        raw = await js.get_msg(layout.dlq_stream, seq)
    except NotFoundError:
        return None
    return DeadLetterRecord(
        int(raw.seq or seq), raw.subject or "", text_headers(raw.headers), raw.data or b"", raw.time
    )


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
        js: JetStreamContext,
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
            await self._js.purge_stream(self._layout.dlq_stream, seq=below, subject=self._purge_filter)
        except (NatsError, TimeoutError) as exc:
            log.warning(
                "replayed, but the dead letters could not be removed",
                extra={"below_seq": below, "error": str(exc) or type(exc).__name__},
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


async def purge(js: JetStreamContext, layout: Layout, reason: str | None) -> int:
    """Delete every dead letter (or every one of a reason); returns how many were removed."""
    before = (await js.stream_info(layout.dlq_stream)).state.messages
    subject = f"{layout.prefix}.dlq.{reason}" if reason else None
    await js.purge_stream(layout.dlq_stream, subject=subject)
    after = (await js.stream_info(layout.dlq_stream)).state.messages
    return int(before - after)


def now_utc() -> datetime:
    return datetime.now(UTC)
