"""One republish pace for all replicas together: a token bucket kept in a JetStream key-value bucket.

Every Agent Zero post becomes a Discord embed (docs/upstreams.md §4: about 5 requests per 2 s per
webhook, 30 per minute per channel), so the rate is global, not per process: each worker takes a token with a
compare-and-set update of the shared bucket state; a lost race just reads again. Adding replicas
never raises the rate. The refill uses each worker's wall clock: keep hosts on NTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from backfill.errors import BusError

log = logging.getLogger(__name__)
KEY = "republish"


class BucketState(msgspec.Struct, frozen=True):
    tokens: float
    updated: float


@dataclass(frozen=True)
class PaceConfig:
    per_minute: float = 30.0  # 0 disables pacing
    burst: int = 5

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


def take(state: BucketState | None, now: float, config: PaceConfig) -> tuple[BucketState, float]:
    """Refill, then take one token: (new state, 0) when one was free, else (refilled state, wait seconds)."""
    if state is None:
        state = BucketState(tokens=float(config.burst), updated=now)
    elapsed = max(now - state.updated, 0.0)
    tokens = min(float(config.burst), state.tokens + elapsed * config.per_second)
    if tokens >= 1.0:
        return BucketState(tokens=tokens - 1.0, updated=now), 0.0
    return BucketState(tokens=tokens, updated=now), (1.0 - tokens) / config.per_second


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(BucketState)


class GlobalPace:
    """`acquire()` returns when this worker may post one more event; `waiting` counts who is queued."""

    def __init__(self, kv: KeyValue, config: PaceConfig, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._config = config
        self._clock = clock
        self._closing = asyncio.Event()
        self.waiting = 0

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, config: PaceConfig, replicas: int = 1
    ) -> GlobalPace:
        try:
            kv = await js.create_key_value(
                bucket=bucket, history=1, replicas=replicas, description="backfill republish pace"
            )
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"cannot open the pace bucket {bucket}: {exc}") from exc
        return cls(kv, config)

    def headroom(self) -> int:
        """How many more republish messages are worth fetching now (never hoard what the pace forbids)."""
        return max(self._config.burst - self.waiting, 0)

    def close(self) -> None:
        """Shutting down: every waiter gives up now (a retry: another replica takes the message) instead
        of holding its message through the shutdown grace."""
        self._closing.set()

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            while not self._closing.is_set():
                wait = await self._try_take()
                if wait == 0.0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=min(wait, 1.0))
            raise BusError("shutting down: not waiting for the pace")
        finally:
            self.waiting -= 1

    async def _try_take(self) -> float:
        """0.0 when a token was taken; else how long to wait. A lost compare-and-set retries at once."""
        try:
            entry = await self._kv.get(KEY)
        except KeyNotFoundError:
            current, revision = None, None
        else:
            revision = entry.revision
            try:
                current = _decoder.decode(entry.value or b"")
            except msgspec.DecodeError:  # overwritten below from a full bucket, by compare-and-set
                log.warning(
                    "pace bucket state unreadable; repairing it",
                    extra={"value": repr((entry.value or b"")[:100])},
                )
                current = None
        state, wait = take(current, self._clock(), self._config)
        if wait > 0.0:
            return wait
        try:
            if revision is None:
                await self._kv.create(KEY, _encoder.encode(state))
            else:
                await self._kv.update(KEY, _encoder.encode(state), last=revision)
        except (KeyWrongLastSequenceError, BadRequestError):
            return 0.01  # another replica took a token first; read again
        return 0.0


class NoPace:
    """Pacing disabled (BACKFILL_PACE_PER_MINUTE=0) or not needed (metadata-only)."""

    waiting = 0

    def headroom(self) -> int:
        return 1_000_000

    async def acquire(self) -> None:
        return None

    def close(self) -> None:
        return None
