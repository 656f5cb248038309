"""Moves messages that exhausted `max_deliver` out of the work stream into the dead letters.

A WorkQueue stream keeps such a message forever and JetStream never redelivers it (docs/upstreams.md §6); with
one message per row subject it would also block every later enqueue of that row. The worker
dead-letters on the last delivery itself, so these are messages whose worker died on that delivery.

Two ways in, both idempotent on the stream sequence and safe with many workers sweeping at once:
- the MAX_DELIVERIES advisory (core NATS: may be missed or repeated);
- a periodic scan of the stream below the consumer's delivered sequence, for missed advisories. A
  message there is either exhausted or still JetStream's to deliver (in flight, or waiting out a
  retry delay). It is swept when the consumer has nothing ack-pending, or when JetStream can no longer
  deliver it: past the time the ledger last knew it alive (a failed delivery notes when its redelivery
  is due, a slow one each heartbeat) plus what the deliveries it has left could take (ack wait each),
  plus a grace. A message nothing was ever noted about is judged from when the scan first saw it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from backfill.adapters.jetstream.bus import AckPublisher, remove_message
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.work import consumer_state, publish_dead_letter
from backfill.core.deadletter import Failure, row_id_from_subject
from backfill.core.errors import BusError
from backfill.core.outcome import RETRIES_EXHAUSTED
from backfill.core.ports import DeliveryLedger
from backfill.core.wire import request_filter, utc_stamp
from backfill.metrics import Metrics

log = logging.getLogger(__name__)


def advisory_subject(layout: Layout) -> str:
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{layout.stream}.{layout.durable}"


class Sweeper:
    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        layout: Layout,
        publisher: AckPublisher,
        metrics: Metrics,
        worker_id: str,
        version: str,
        ledger: DeliveryLedger,
        *,
        ack_wait: float,
        max_deliver: int,
        grace: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._js = js
        self._layout = layout
        self._publisher = publisher
        self._metrics = metrics
        self._worker_id = worker_id
        self._version = version
        self._ledger = ledger
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver
        self._grace = grace
        self._clock = clock
        self._suspects: dict[
            int, float
        ] = {}  # stream seq -> when a scan first saw it below the delivered seq
        self._tasks: set[asyncio.Task[bool]] = set()
        self.swept = 0

    async def listen(self) -> None:
        """Sweep each message an advisory names (the advisory arrives when JetStream gives up on it)."""

        async def on_advisory(msg: Msg) -> None:
            try:
                event = json.loads(msg.data)
                seq, deliveries = int(event["stream_seq"]), int(event.get("deliveries", 0))
            except (ValueError, KeyError, TypeError):
                log.warning("unreadable max-deliveries advisory", extra={"data": msg.data[:200]})
                return
            task = asyncio.create_task(self._sweep_logged(seq, deliveries, "max deliveries advisory"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        await self._nc.subscribe(advisory_subject(self._layout), cb=on_advisory)

    async def _sweep_logged(self, seq: int, deliveries: int, why: str) -> bool:
        try:
            return await self.sweep(seq, deliveries, why)
        except Exception:  # the periodic scan tries this message again
            log.exception("sweep failed", extra={"seq": seq})
            return False

    async def sweep(self, seq: int, deliveries: int, why: str) -> bool:
        """Copy message `seq` to the dead letters, await the ack, then delete it. False when already gone."""
        try:
            original = await self._js.get_msg(self._layout.stream, seq)
        except NotFoundError:
            return False  # another sweeper (or an ack) got there first
        stored = await self._publish(original, deliveries, why)
        if not stored:
            return False  # kept in the work stream; the next scan tries again
        try:
            await remove_message(self._js, self._layout.stream, seq)  # False: acked or swept meanwhile
        except BusError as exc:  # dead-lettered but still in the stream: the next scan deletes it
            log.warning("swept message not deleted; will retry", extra={"seq": seq, "error": str(exc)})
            return False
        self._suspects.pop(seq, None)
        self.swept += 1
        self._metrics.dead_letters.labels(RETRIES_EXHAUSTED).inc()
        log.warning("swept exhausted message", extra={"seq": seq, "subject": original.subject, "why": why})
        return True

    async def _publish(self, original: RawStreamMsg, deliveries: int, why: str) -> bool:
        now = utc_stamp(datetime.now(UTC))
        subject = original.subject or ""
        failure = Failure(
            reason=RETRIES_EXHAUSTED,
            detail=f"{why}: unsettled after {deliveries or 'max'} deliveries (worker lost mid-delivery)",
            original_subject=subject,
            stream=self._layout.stream,
            stream_seq=int(original.seq or 0),
            deliveries=deliveries,
            first_failure=original.time.isoformat() if original.time else now,
            last_failure=now,
            worker=self._worker_id,
            version=self._version,
            row_id=row_id_from_subject(subject),
        )
        stored, _ = await publish_dead_letter(
            self._publisher, self._layout.prefix, failure, original.data or b"", original.headers
        )
        return stored

    async def scan_once(self) -> int:
        """Find leftovers below the consumer's delivered sequence; returns how many were swept."""
        state = await consumer_state(self._js, self._layout.stream, self._layout.durable)
        delivered, idle = state.delivered_seq, state.ack_pending == 0
        now, swept, seen = time.monotonic(), 0, set()
        seq = 1
        while seq <= delivered:
            try:
                msg = await self._js.get_msg(
                    self._layout.stream, seq, subject=request_filter(self._layout.prefix), next=True
                )
            except NotFoundError:
                break
            if msg.seq is None or msg.seq > delivered:
                break
            seen.add(msg.seq)
            first_seen = self._suspects.setdefault(msg.seq, now)
            if idle or await self._given_up(msg.seq, now - first_seen):
                swept += await self.sweep(msg.seq, state.max_deliver, "periodic scan")
            seq = msg.seq + 1
        self._suspects = {s: t for s, t in self._suspects.items() if s in seen}
        return swept

    async def _given_up(self, seq: int, suspected_for: float) -> bool:
        """True when JetStream can no longer deliver message `seq` (see the module's docstring)."""
        if suspected_for < self._ack_wait + self._grace:
            return False  # a delivery that started before the scan may still be under way
        try:
            alive = await self._ledger.alive(self._layout.stream, seq)
        except BusError as exc:
            log.warning("liveness unknown; not sweeping this time", extra={"seq": seq, "error": str(exc)})
            return False
        if alive is None:  # never failed, never slow: each delivery left within ack wait
            return suspected_for >= self._max_deliver * self._ack_wait + self._grace
        left = max(self._max_deliver - alive.delivery, 0)
        return self._clock() >= alive.until + left * self._ack_wait + self._grace

    async def scan_forever(self, every: float) -> None:
        while True:
            try:
                await self.scan_once()
            except (BusError, NatsError, TimeoutError) as exc:
                log.warning("sweep scan failed; will retry", extra={"error": str(exc) or type(exc).__name__})
            except Exception:  # whatever one message does to a scan, the next scan still runs
                log.exception("sweep scan failed; will retry")
            await asyncio.sleep(every)
