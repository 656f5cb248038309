"""The republish pace's rules: the token bucket all replicas share, and a message's turn at it.

The bucket itself lives in JetStream (`backfill.adapters.jetstream.pace`); this is its arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import msgspec

UNCAPPED = 1_000_000  # the fetch cap while no republish message waits for a token: none
SHARE_SECONDS = 0.25  # one compare-and-set takes at most this long a share of the rate (at least one)


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

    @property
    def most_per_take(self) -> int:
        """How many tokens one compare-and-set may take: never more than the rate gives in
        SHARE_SECONDS, so a replica with many waiters cannot empty the bucket for the others."""
        return max(1, min(self.burst, math.ceil(self.per_second * SHARE_SECONDS)))


def take_many(
    state: BucketState | None, now: float, config: PaceConfig, want: int
) -> tuple[BucketState, int, float]:
    """Refill, then take up to `want` whole tokens: (new state, tokens taken, 0) when at least one was
    free, else (refilled state, 0, seconds until the next one)."""
    if state is None:
        state = BucketState(tokens=float(config.burst), updated=now)
    elapsed = max(now - state.updated, 0.0)
    tokens = min(float(config.burst), state.tokens + elapsed * config.per_second)
    got = min(want, math.floor(tokens))
    if got >= 1:
        return BucketState(tokens=tokens - got, updated=now), got, 0.0
    return BucketState(tokens=tokens, updated=now), 0, (1.0 - tokens) / config.per_second


def take(state: BucketState | None, now: float, config: PaceConfig) -> tuple[BucketState, float]:
    """Refill, then take one token: (new state, 0) when one was free, else (refilled state, wait seconds)."""
    new, _, wait = take_many(state, now, config, 1)
    return new, wait


class TokenSource(Protocol):
    """Where a turn takes its token: the global pace's dispenser."""

    waiting: int  # open turns

    async def acquire_token(self) -> None: ...


class Turn:
    """One republish message's place at the pace, from the moment it is taken on until it holds its
    token (or gives up): while any turn is open the worker fetches only what the burst can serve."""

    def __init__(self, pace: TokenSource | None) -> None:
        self._pace = pace
        if pace is not None:
            pace.waiting += 1

    async def take(self) -> None:
        """Wait for this message's token (at once without a pace)."""
        try:
            if self._pace is not None:
                await self._pace.acquire_token()
        finally:
            self.release()

    def release(self) -> None:
        if self._pace is not None:
            self._pace.waiting -= 1
            self._pace = None


class NoPace:
    """Pacing disabled (BACKFILL_PACE_PER_MINUTE=0) or not needed (metadata-only)."""

    def headroom(self) -> int:
        return UNCAPPED

    def turn(self) -> Turn:
        return Turn(None)

    def close(self) -> None:
        return None
