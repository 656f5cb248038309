"""What JetStream does not remember about a delivery: the records the ledger keeps, and how a failing
message's retry time is counted. The shared ledger lives in a JetStream key-value bucket
(`backfill.adapters.jetstream.ledger`); `LocalLedger` keeps the same in one process.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable

import msgspec

_KEY_SAFE = re.compile(r"[A-Za-z0-9_=-]{1,64}")


def key_token(text: str) -> str:
    """Any text (a correlation id from the wire) as one key token: itself when key-safe, else a digest."""
    if _KEY_SAFE.fullmatch(text):
        return text
    return "h" + hashlib.sha256(text.encode()).hexdigest()[:32]


class Alive(msgspec.Struct, frozen=True):
    until: float  # wall-clock seconds: the delivery (or the redelivery it waits for) is due by then
    delivery: int  # the delivery count when this was noted


class Failing(msgspec.Struct, frozen=True):
    """What the ledger keeps about a failing message (`failure.<stream>.<seq>`)."""

    first: float  # when its retry count started: its first failure, moved later by time not retrying
    due: float  # when the redelivery its last failure asked for was due


class FailedDelivery(msgspec.Struct, frozen=True):
    """One failed delivery, as the consumer saw it (wall-clock seconds)."""

    started: float  # when this delivery began
    delay: float  # the retry delay it asks for
    paced: float = 0.0  # how long it waited for the global pace


def count_failure(previous: Failing | None, delivery: FailedDelivery, now: float) -> Failing:
    """The retry count goes on from the previous failure, less the time that was not retrying: the
    wait in the queue past the redelivery's due time (behind other work, or a paced backlog) and the
    wait for the pace inside this delivery."""
    if previous is None:
        return Failing(first=now, due=now + delivery.delay)
    queued = max(delivery.started - previous.due, 0.0)
    return Failing(first=min(previous.first + queued + delivery.paced, now), due=now + delivery.delay)


class LocalLedger:
    """The same bookkeeping in this process only: for one worker without a bucket (tests, benchmarks)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.failures: dict[tuple[str, int], Failing] = {}
        self.alive_until: dict[tuple[str, int], Alive] = {}
        self.envelopes: dict[str, str] = {}  # correlation id -> the first envelope seen on NATS
        self.unconfirmed: dict[str, list[str]] = {}  # correlation id -> ids answered, never seen

    async def retrying_for(self, stream: str, seq: int, delivery: FailedDelivery) -> float:
        now = self._clock()
        failing = self.failures[(stream, seq)] = count_failure(
            self.failures.get((stream, seq)), delivery, now
        )
        return max(now - failing.first, 0.0)

    async def settled(self, stream: str, seq: int) -> None:
        self.failures.pop((stream, seq), None)
        self.alive_until.pop((stream, seq), None)

    async def note_alive(self, stream: str, seq: int, alive: Alive) -> None:
        self.alive_until[(stream, seq)] = alive

    async def alive(self, stream: str, seq: int) -> Alive | None:
        return self.alive_until.get((stream, seq))

    async def envelope_seen(self, correlation_id: str) -> str | None:
        return self.envelopes.get(correlation_id)

    async def record_envelope(self, correlation_id: str, envelope_id: str) -> None:
        self.envelopes.setdefault(correlation_id, envelope_id)

    async def note_unconfirmed(self, correlation_id: str, envelope_id: str) -> int:
        answered = self.unconfirmed.setdefault(correlation_id, [])
        if envelope_id not in answered:
            answered.append(envelope_id)
        return len(answered)
