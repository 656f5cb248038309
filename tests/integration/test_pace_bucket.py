"""The global pace on a real JetStream key-value bucket: tokens taken by compare-and-set, and a state
nobody can read is repaired instead of blocking every replica."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from backfill.errors import BusError
from backfill.pace import KEY, GlobalPace, PaceConfig


@pytest.fixture
async def pace(nats_url: str) -> AsyncIterator[tuple[GlobalPace, NatsClient]]:
    nc = await nats.connect(nats_url)
    bucket = f"PACE_{uuid.uuid4().hex[:10]}"
    yield await GlobalPace.open(nc.jetstream(), bucket, PaceConfig(per_minute=60, burst=3)), nc
    await nc.jetstream().delete_key_value(bucket)
    await nc.drain()


async def test_a_burst_is_taken_at_once_and_then_the_rate_applies(
    pace: tuple[GlobalPace, NatsClient],
) -> None:
    limiter, _ = pace
    for _ in range(3):
        await asyncio.wait_for(limiter.acquire(), 5)
    assert await limiter._try_take() > 0  # the fourth token is not there yet


async def test_an_unreadable_state_is_repaired_not_retried_forever(
    pace: tuple[GlobalPace, NatsClient],
) -> None:
    """Anything else in the bucket's key (a hand edit, an older format) is overwritten by a full bucket."""
    limiter, _ = pace
    await limiter._kv.put(KEY, b"\xff not a bucket state")
    await asyncio.wait_for(limiter.acquire(), 5)
    entry = await limiter._kv.get(KEY)
    assert entry.value is not None and b"tokens" in entry.value


async def test_closing_releases_every_waiter_at_once(pace: tuple[GlobalPace, NatsClient]) -> None:
    """On shutdown a message waiting for a token becomes a retry now, not after the grace period."""
    limiter, _ = pace
    for _ in range(3):
        await limiter.acquire()  # the burst is spent: the next token is a second away
    waiter = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    limiter.close()
    with pytest.raises(BusError, match="shutting down"):
        await asyncio.wait_for(waiter, 0.5)
    assert limiter.waiting == 0
