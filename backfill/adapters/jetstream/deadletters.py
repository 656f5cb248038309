"""The dead-letter stream as `producer dlq` reads and trims it, its counts per reason, and the index of
which rows have a dead letter that `enqueue --all-missing` and `producer watch` keep out of the queue.

Reading uses an ephemeral consumer that acknowledges nothing, so listing never changes the stream.
Removing is a purge: every dead letter (of a reason), or the prefix below a sequence that a replay has
re-enqueued. The index reads headers only, and after its first read only what was added since (one
stream-info request when nothing was). Every failure is a BusError; a dead letter that is not there is
NotFound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from backfill.adapters.jetstream import natspy
from backfill.adapters.jetstream.bus import api_failure, failure
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.listen import text_headers
from backfill.core.deadletter import DeadLetterIndex, DeadLetterRecord, Entry
from backfill.core.errors import BusError, NotFound
from backfill.core.wire import dlq_filter, dlq_reason_filter, dlq_subject

FETCH_BATCH = 1000
READ_TIMEOUT = 10.0


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


def _record(msg: Msg) -> DeadLetterRecord:
    meta = msg.metadata
    return DeadLetterRecord(
        meta.sequence.stream, msg.subject, text_headers(msg.headers), msg.data, meta.timestamp
    )


async def read_dead_letters(
    js: JetStreamContext,
    layout: Layout,
    reason: str | None = None,
    *,
    start_seq: int | None = None,
    headers_only: bool = False,
) -> AsyncIterator[DeadLetterRecord]:
    """Every dead letter (optionally of one reason; from `start_seq` on when given), oldest first,
    without changing the stream; `headers_only`: without their bodies.

    An ephemeral consumer that acknowledges nothing, read with `no_wait` pull requests of up to
    FETCH_BATCH on our own inbox. nats-py's `fetch` spends a task, a uuid and a timer on every message
    (a quarter of the replay's CPU); a subscription callback collects a whole batch instead.
    """
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL if start_seq is None else DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start_seq,
        filter_subject=dlq_reason_filter(layout.prefix, reason),
        inactive_threshold=30.0,
        headers_only=headers_only or None,
    )
    try:
        info = await js.add_consumer(layout.dlq_stream, config)
    except (NatsError, TimeoutError) as exc:
        raise failure(f"cannot read {layout.dlq_stream}", exc) from exc
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
            try:
                await nc.publish(next_subject, json.dumps(request).encode(), reply=inbox)
                await asyncio.wait_for(batch.done.wait(), timeout=READ_TIMEOUT)
            except TimeoutError as exc:
                raise BusError(f"reading {layout.dlq_stream}: no answer within {READ_TIMEOUT}s") from exc
            except NatsError as exc:
                raise failure(f"reading {layout.dlq_stream}", exc) from exc
            if not batch.msgs:
                return
            left -= len(batch.msgs)
            for msg in batch.msgs:
                yield _record(msg)
    finally:
        with contextlib.suppress(NatsError, TimeoutError):
            await sub.unsubscribe()
        with contextlib.suppress(NatsError, TimeoutError):
            await js.delete_consumer(layout.dlq_stream, info.name)  # else it lingers 30 s


async def dead_letter(js: JetStreamContext, layout: Layout, seq: int) -> DeadLetterRecord:
    """The dead letter stored under `seq`; NotFound when there is none."""
    try:
        raw = await js.get_msg(layout.dlq_stream, seq)
    except NotFoundError as exc:
        raise NotFound(f"no dead letter with sequence {seq} in {layout.dlq_stream}") from exc
    except (NatsError, TimeoutError) as exc:
        raise api_failure(exc) from exc
    return DeadLetterRecord(
        int(raw.seq or seq), raw.subject or "", text_headers(raw.headers), raw.data or b"", raw.time
    )


async def dead_letter_counts(js: JetStreamContext, layout: Layout) -> dict[str, int]:
    """Dead letters per reason, from the stream's per-subject counts (no message is read)."""
    try:
        info = await js.stream_info(layout.dlq_stream, subjects_filter=dlq_filter(layout.prefix))
    except NotFoundError as exc:
        raise NotFound(
            f"stream {layout.dlq_stream!r} not found (JetStream error {exc.err_code}: {exc.description})."
        ) from exc
    except (NatsError, TimeoutError) as exc:
        raise api_failure(exc) from exc
    subjects: dict[str, int] = info.state.subjects or {}
    return {subject.rsplit(".", 1)[-1]: count for subject, count in sorted(subjects.items())}


async def purge_dead_letters(js: JetStreamContext, layout: Layout, reason: str | None) -> int:
    """Delete every dead letter (or every one of a reason); returns how many were removed."""
    subject = dlq_subject(layout.prefix, reason) if reason else None
    try:
        before = (await js.stream_info(layout.dlq_stream)).state.messages
        await js.purge_stream(layout.dlq_stream, subject=subject)
        after = (await js.stream_info(layout.dlq_stream)).state.messages
    except (NatsError, TimeoutError) as exc:
        raise api_failure(exc) from exc
    return int(before - after)


async def purge_below(js: JetStreamContext, layout: Layout, seq: int, subject: str) -> None:
    """Remove every dead letter on `subject` (a filter) with a sequence below `seq`."""
    try:
        await js.purge_stream(layout.dlq_stream, seq=seq, subject=subject)
    except (NatsError, TimeoutError) as exc:
        raise BusError(str(exc) or type(exc).__name__) from exc


async def refresh_index(js: JetStreamContext, layout: Layout, index: DeadLetterIndex) -> None:
    """Bring `index` up to the stream: forget what aged out, read (headers only) what was added since
    its last sequence, and read everything again only when something in the middle was removed (a
    replay or purge by someone else: the stream then holds fewer than the index knows)."""
    try:
        state = (await js.stream_info(layout.dlq_stream)).state
    except NotFoundError:
        index.clear()
        return
    except (NatsError, TimeoutError) as exc:
        raise api_failure(exc) from exc
    index.drop_below(state.first_seq)
    if state.last_seq > index.last_seq:
        start = max(index.last_seq + 1, state.first_seq, 1)
        async for record in read_dead_letters(js, layout, start_seq=start, headers_only=True):
            index.add(Entry.of(record))
    if index.count_through(state.last_seq) != state.messages:
        index.clear()
        async for record in read_dead_letters(js, layout, headers_only=True):
            index.add(Entry.of(record))
    index.last_seq = max(index.last_seq, state.last_seq)  # read through it, whatever is left of it
