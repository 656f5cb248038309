"""The one place an Outcome becomes JetStream actions: ack, nak(delay), or dead-letter then term.

A dead letter's publish acknowledgement is awaited before the original is termed; when the dead-letter
publish fails, the original is nak'd with a delay, never dropped.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import UTC, datetime

from backfill.adapters.jetstream.bus import AckPublisher
from backfill.adapters.jetstream.work import Delivery, publish_dead_letter
from backfill.core.deadletter import Failure, row_id_from_subject
from backfill.core.errors import BusError
from backfill.core.outcome import Ack, DeadLetter, Outcome, Retry, Settled
from backfill.core.wire import utc_stamp
from backfill.metrics import Metrics

log = logging.getLogger(__name__)
DLQ_FAILED_DELAY = 5.0


class FirstFailures:
    """When this worker first saw each message fail (bounded; another replica may have seen it earlier)."""

    def __init__(self, size: int = 10_000) -> None:
        self._seen: OrderedDict[int, str] = OrderedDict()
        self._size = size

    def note(self, seq: int, stamp: str) -> str:
        first = self._seen.setdefault(seq, stamp)
        self._seen.move_to_end(seq)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return first

    def forget(self, seq: int) -> None:
        self._seen.pop(seq, None)


class Settler:
    def __init__(
        self,
        publisher: AckPublisher,
        prefix: str,
        stream: str,
        worker_id: str,
        version: str,
        metrics: Metrics,
    ) -> None:
        self._publisher = publisher
        self._prefix = prefix
        self._stream = stream
        self._worker_id = worker_id
        self._version = version
        self._metrics = metrics
        self._failures = FirstFailures()

    async def settle(self, msg: Delivery, outcome: Outcome) -> Settled:
        """Apply the outcome; returns the metrics outcome label actually applied."""
        seq = msg.seq
        try:
            if isinstance(outcome, Ack):
                await msg.ack()
                self._failures.forget(seq)
                return Settled(outcome.result)
            if isinstance(outcome, Retry):
                self._failures.note(seq, utc_stamp(datetime.now(UTC)))
                await msg.nak(delay=outcome.delay)
                return Settled.RETRIED
            return await self._dead_letter(msg, outcome)
        except BusError as exc:
            # The server will redeliver after ack_wait; nothing is lost, only delayed.
            log.warning("could not settle message", extra={"seq": seq, "error": str(exc)})
            return Settled.RETRIED

    async def _dead_letter(self, msg: Delivery, outcome: DeadLetter) -> Settled:
        seq = msg.seq
        now = utc_stamp(datetime.now(UTC))
        failure = Failure(
            reason=outcome.reason,
            detail=outcome.detail,
            original_subject=msg.subject,
            stream=self._stream,
            stream_seq=seq,
            deliveries=msg.attempt,
            first_failure=self._failures.note(seq, now),
            last_failure=now,
            worker=self._worker_id,
            version=self._version,
            row_id=row_id_from_subject(msg.subject),
        )
        stored, headers = await publish_dead_letter(
            self._publisher, self._prefix, failure, msg.data, msg.headers
        )
        if not stored:
            await msg.nak(delay=DLQ_FAILED_DELAY)
            return Settled.RETRIED
        await msg.term()
        self._failures.forget(seq)
        self._metrics.dead_letters.labels(outcome.reason).inc()
        log.warning(
            "dead-lettered",
            extra={
                "seq": seq,
                "row_id": failure.row_id,
                "reason": outcome.reason,
                "detail": headers["Backfill-Detail"],
            },
        )
        return Settled.DEAD_LETTERED
