"""A republish confirmed by what reaches NATS, not by Agent Zero's answer (docs/upstreams.md §1).

Agent Zero answers 200 as soon as its envelope is in its NATS client's buffer (no flush): killed right
after answering, the envelope dies with it and the row would be marked done with an event that never
went out. Killed after publishing but before answering, a retry would publish a second envelope. So,
per row and backfill version (one correlation id):

1. An envelope already seen on NATS (every worker records each backfill envelope it sees in the ledger,
   whichever replica published it) is the row's event: merged, never published again.
2. Otherwise the publish waits at Agent Zero's circuit while it cannot publish (held, not retried), takes
   its turn at the pace, and asks Agent Zero.
3. After the 200, or after an answer that never came (a timeout, the connection lost), the envelope is
   waited for, `envelope_wait` seconds at most (it is usually out before the answer is read). Seen: that
   is the row's event. Not seen, and not in the ledger either (another replica may have caught what this
   worker's connection missed): the answered id is kept in the ledger for the record and the event is
   published again, up to `posts` times in one delivery, then retried as any failure. A row whose
   answered envelopes never show up `unconfirmed_limit` times is dead-lettered: Agent Zero and the
   workers cannot be on the same NATS.
4. "Not ready" (Agent Zero published nothing) goes to the circuit: held while Agent Zero is out, else
   retried as any failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backfill.core.errors import (
    BusError,
    OutcomeUnknown,
    UpstreamNotReady,
    UpstreamRejected,
    UpstreamUnavailable,
)
from backfill.core.pace import Turn
from backfill.core.ports import DeliveryLedger, EnvelopeWatch, EventPublisher, Pace, PublishGate

log = logging.getLogger(__name__)
SERVICE = "agent_zero"
TOPIC = "content.published.v1"


@dataclass(frozen=True)
class ConfirmRules:
    envelope_wait: float = 5.0  # seconds an answered (or unanswered) publish waits for its envelope
    posts: int = 3  # publishes within one delivery before it is retried as a failure
    unconfirmed_limit: int = 3  # answered ids never seen, per row and version, before a dead letter


@dataclass
class Held:
    """A republish's time not spent retrying: waiting for its turn at the pace, or at Agent Zero's
    circuit. Its retry budget never counts it."""

    turn: Turn
    seconds: float = 0.0


class Republisher:
    def __init__(
        self,
        agent_zero: EventPublisher,
        watch: EnvelopeWatch,
        ledger: DeliveryLedger,
        gate: PublishGate,
        pace: Pace,
        rules: ConfirmRules,
        unconfirmed: Callable[[], None] = lambda: None,
    ) -> None:
        """`unconfirmed` is told of every answered id whose envelope was not seen (a metric)."""
        self._agent_zero = agent_zero
        self._watch = watch
        self._ledger = ledger
        self._gate = gate
        self._pace = pace
        self._rules = rules
        self._unconfirmed = unconfirmed

    async def publish(self, payload: dict[str, Any], correlation_id: str, held: Held) -> str:
        """The id of the row's envelope on NATS: one seen before, or the one this publish sent."""
        with self._watch.expect(correlation_id) as expected:
            seen = await self._ledger.envelope_seen(correlation_id)
            if seen is not None:
                log.info(
                    "envelope already on NATS; merging it",
                    extra={"event": seen, "correlation": correlation_id},
                )
                return seen
            for post in range(1, self._rules.posts + 1):
                if (early := expected.arrived()) is not None:  # an earlier publish's, late
                    return await expected.wait(self._rules.envelope_wait) or early
                answered = await self._post(payload, correlation_id, held, post)
                seen = await expected.wait(self._rules.envelope_wait)
                if seen is None and answered is not None and expected.blind():
                    return await self._trust_answer(correlation_id, answered)
                if seen is None:  # another replica may have seen what this one missed
                    seen = await self._ledger.envelope_seen(correlation_id)
                if seen is not None:
                    if answered not in (None, seen):
                        log.info(
                            "another envelope of the row reached NATS",
                            extra={"event": seen, "answered": answered},
                        )
                    return seen
                await self._not_seen(correlation_id, answered)
        raise UpstreamUnavailable(
            SERVICE, f"no envelope reached {TOPIC} after {self._rules.posts} publishes in this delivery"
        )

    async def _post(self, payload: dict[str, Any], correlation_id: str, held: Held, post: int) -> str | None:
        """Ask Agent Zero once it may be asked; the id it answered, or None when no answer came (the
        envelope decides whether it went out)."""
        turn = held.turn if post == 1 else self._pace.turn()
        try:
            held.seconds += await self._gate.admit()
            started = time.monotonic()
            await turn.take()  # one global rate for every replica's republishes
            held.seconds += time.monotonic() - started
            while True:
                try:
                    return await self._ask(payload, correlation_id)
                except UpstreamNotReady as exc:
                    if not await self._gate.not_ready(exc):
                        raise
                held.seconds += await self._gate.admit()  # Agent Zero is out: wait until it is back
        finally:
            turn.release()

    async def _ask(self, payload: dict[str, Any], correlation_id: str) -> str | None:
        """One publish, its verdict told to the circuit ("not ready" is the caller's to tell)."""
        try:
            event_id = await self._agent_zero.publish(payload, correlation_id)
        except UpstreamNotReady:
            raise
        except UpstreamRejected:
            self._gate.answered()  # it is up, and said no
            raise
        except OutcomeUnknown as exc:
            self._gate.abandoned()
            log.info("no answer from Agent Zero; its envelope decides", extra={"error": str(exc)})
            return None
        except BaseException:
            self._gate.abandoned()
            raise
        self._gate.answered()
        return event_id

    async def _trust_answer(self, correlation_id: str, answered: str) -> str:
        """This worker's connection to NATS dropped while it waited: not seeing the envelope proves
        nothing, and publishing again would send a second one whenever the first went out (a node of the
        cluster lost, say). Agent Zero's answer is the row's event, recorded for the other replicas."""
        log.warning(
            "connection to NATS dropped while waiting for the envelope; taking Agent Zero's answer",
            extra={"answered": answered, "correlation": correlation_id},
        )
        try:
            await self._ledger.record_envelope(correlation_id, answered)
        except BusError as exc:  # the merge records it in the row all the same
            log.warning("answered id not recorded", extra={"answered": answered, "error": str(exc)})
        return answered

    async def _not_seen(self, correlation_id: str, answered: str | None) -> None:
        """Nothing reached NATS for this publish: keep the answered id, and dead-letter a row whose
        answered envelopes keep not showing up."""
        wait = self._rules.envelope_wait
        if answered is None:
            log.warning("no answer and no envelope; publishing again", extra={"correlation": correlation_id})
            return
        count = await self._ledger.note_unconfirmed(correlation_id, answered)
        self._unconfirmed()
        log.warning(
            "Agent Zero answered but its envelope never reached NATS; publishing again",
            extra={"answered": answered, "unconfirmed": count, "waited_seconds": wait},
        )
        if count >= self._rules.unconfirmed_limit:
            raise UpstreamRejected(
                SERVICE,
                f"answered {count} publishes of this row (the last {answered}) but none of their envelopes"
                f" reached {TOPIC} on the workers' NATS within {wait:g}s: Agent Zero and the workers must"
                " use the same NATS (NATS_URL); replay once they do",
            )
