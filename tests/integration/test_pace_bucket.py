"""The global pace on a real JetStream key-value bucket: tokens taken by compare-and-set, one dispenser
per process serving its waiters in order (several tokens per write), and a state nobody can read is
repaired instead of blocking every replica."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from backfill.adapters.jetstream.pace import KEY, GlobalPace
from backfill.core.errors import BusError
from backfill.core.pace import PaceConfig


@pytest.fixture
async def bucket(nats_url: str) -> AsyncIterator[tuple[str, NatsClient]]:
    nc = await nats.connect(nats_url)
    name = f"PACE_{uuid.uuid4().hex[:10]}"
    yield name, nc
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_key_value(name)
    await nc.drain()


@pytest.fixture
async def pace(bucket: tuple[str, NatsClient]) -> tuple[GlobalPace, NatsClient]:
    name, nc = bucket
    return await GlobalPace.open(nc.jetstream(), name, PaceConfig(per_minute=60, burst=3)), nc


async def revision(kv: KeyValue) -> int:
    """How many times the pace state was written (each write is one compare-and-set)."""
    entry = await kv.get(KEY)
    return entry.revision or 0


async def test_a_burst_is_taken_at_once_and_then_the_rate_applies(
    pace: tuple[GlobalPace, NatsClient],
) -> None:
    limiter, _ = pace
    for _ in range(3):
        await asyncio.wait_for(limiter.acquire(), 5)
    with pytest.raises(TimeoutError):  # the fourth token is a second away (60 per minute)
        await asyncio.wait_for(limiter.acquire(), 0.5)
    assert limiter.waiting == 0  # the one given up no longer counts
    started = time.monotonic()
    await asyncio.wait_for(limiter.acquire(), 5)
    assert time.monotonic() - started < 1.0  # it did come, within the second


async def test_one_write_serves_many_local_waiters_in_their_order(bucket: tuple[str, NatsClient]) -> None:
    """Twenty messages of one worker ask at once: a fast pace gives the whole burst in one compare-and-
    set (no message races another of its own process for the revision), handed out first come first."""
    name, nc = bucket
    limiter = await GlobalPace.open(nc.jetstream(), name, PaceConfig(per_minute=6000, burst=20))
    order: list[int] = []

    async def republish(index: int) -> None:
        await limiter.acquire()
        order.append(index)

    await asyncio.wait_for(asyncio.gather(*(republish(i) for i in range(20))), 5)
    assert order == list(range(20))
    assert await revision(limiter._kv) == 1


async def test_one_write_takes_no_more_than_a_quarter_second_of_the_rate(
    bucket: tuple[str, NatsClient],
) -> None:
    """At 4/s a write takes one token even with a full bucket: the other replicas get their share."""
    name, nc = bucket
    limiter = await GlobalPace.open(nc.jetstream(), name, PaceConfig(per_minute=240, burst=4))
    await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(4))), 5)
    assert await revision(limiter._kv) == 4


async def test_replicas_share_the_bucket_and_its_rate(bucket: tuple[str, NatsClient]) -> None:
    """Two processes' dispensers on one bucket: together they never exceed burst + rate x elapsed."""
    name, nc = bucket
    config = PaceConfig(per_minute=1200, burst=5)  # 20/s
    first = await GlobalPace.open(nc.jetstream(), name, config)
    other = await nats.connect(nc.connected_url.geturl() if nc.connected_url else "")
    try:
        second = await GlobalPace.open(other.jetstream(), name, config)
        granted: list[float] = []

        async def republish(pace: GlobalPace) -> None:
            await pace.acquire()
            granted.append(time.monotonic())

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(republish(p) for p in [first, second] * 15)), 10)
        assert len(granted) == 30
        assert granted[-1] - started >= (30 - config.burst) / config.per_second * 0.95
        worst = max(sum(1 for t in granted if start <= t < start + 0.5) for start in granted)
        assert worst <= config.burst + config.per_second * 0.5 + 1  # +1: timer granularity
    finally:
        await other.drain()


async def test_a_token_handed_to_a_message_given_up_goes_to_the_next(
    pace: tuple[GlobalPace, NatsClient],
) -> None:
    """A message cancelled in the instant its token is handed out (shutdown's grace ending) loses nothing:
    the next message has that token without another write to the bucket."""
    limiter, _ = pace
    for _ in range(3):
        await limiter.acquire()
    abandoned = asyncio.ensure_future(limiter.acquire())
    hand_out = limiter._hand_out

    def hand_out_then_cancel(tokens: int) -> None:
        hand_out(tokens)
        if tokens:
            abandoned.cancel()  # before the task runs again to receive its token

    limiter._hand_out = hand_out_then_cancel  # type: ignore[method-assign]  # the race, made certain
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(abandoned, 5)
    limiter._hand_out = hand_out  # type: ignore[method-assign]  # the real one back
    written = await revision(limiter._kv)
    await asyncio.wait_for(limiter.acquire(), 0.2)  # no new token needed: the spare one
    assert await revision(limiter._kv) == written
    assert limiter.waiting == 0


async def test_a_bucket_that_cannot_be_reached_fails_the_waiters_with_a_bus_error(
    bucket: tuple[str, NatsClient],
) -> None:
    """Its message then retries under its retry policy, rather than waiting forever."""
    name, nc = bucket
    limiter = await GlobalPace.open(nc.jetstream(), name, PaceConfig(per_minute=60, burst=1))
    await limiter.acquire()
    await nc.jetstream().delete_key_value(name)
    with pytest.raises(BusError, match="pace bucket unavailable"):
        await asyncio.wait_for(limiter.acquire(), 5)
    assert limiter.waiting == 0


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


async def test_the_fetch_cap_holds_only_while_republish_messages_wait(
    pace: tuple[GlobalPace, NatsClient],
) -> None:
    """No turn open: no cap (metadata-only work flows at full concurrency); with turns open, only what
    the burst can still serve."""
    limiter, _ = pace
    assert limiter.headroom() >= 1_000_000
    turns = [limiter.turn() for _ in range(2)]
    assert limiter.headroom() == 1  # burst 3, two waiting
    turns.append(limiter.turn())
    assert limiter.headroom() == 0
    for turn in turns:
        turn.release()
        turn.release()  # releasing twice counts once
    assert limiter.waiting == 0 and limiter.headroom() >= 1_000_000
