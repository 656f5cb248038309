"""The one-watcher lease and the watcher's durable state on real nats-servers: 2.15 and 2.10 (PMOVES'
release, no per-key TTL), so the lease is a bucket whose max_age is its TTL, taken with create and
renewed with compare-and-set."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from backfill.adapters.jetstream.layout import Layout, build_layout
from backfill.adapters.jetstream.watchstate import Lease, WatchState
from backfill.core.watch import PassRecord, WatchCursor
from backfill.settings import NatsSettings
from producer.watch import LeaseGuard

TTL = 1.5


@pytest.fixture(params=["nats_url", "old_nats_url"], ids=["2.15", "2.10"])
async def nc(request: pytest.FixtureRequest) -> AsyncIterator[NatsClient]:
    client = await nats.connect(request.getfixturevalue(request.param))
    yield client
    await client.drain()


@pytest.fixture
def layout() -> Layout:
    return build_layout(NatsSettings(BACKFILL_STREAM=f"BF_{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def bucket() -> str:
    return f"LEASE_{uuid.uuid4().hex[:8]}"


async def taken_within(lease: Lease, holder: str, seconds: float) -> float:
    """Seconds until `holder` takes the lease, trying every 0.1 s; fails after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await lease.acquire(holder):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{holder} did not take the lease within {seconds}s")


async def test_one_holder_at_a_time_and_the_other_sees_who(
    nc: NatsClient, layout: Layout, bucket: str
) -> None:
    """The first watcher takes the lease; a second is refused and reads the holder's record."""
    first = await Lease.open(nc.jetstream(), bucket, layout, TTL)
    second = await Lease.open(nc.jetstream(), bucket, layout, TTL)
    assert await first.acquire("watcher-a")
    assert not await second.acquire("watcher-b")
    holder = await second.holder()
    assert holder is not None and holder.holder == "watcher-a" and holder.ttl == TTL
    assert first.held and not second.held


async def test_a_renewed_lease_outlives_its_ttl(nc: NatsClient, layout: Layout, bucket: str) -> None:
    """Renewing well within the TTL keeps it: the other watcher is refused for three TTLs."""
    first = await Lease.open(nc.jetstream(), bucket, layout, TTL)
    second = await Lease.open(nc.jetstream(), bucket, layout, TTL)
    assert await first.acquire("watcher-a")
    deadline = time.monotonic() + 3 * TTL
    while time.monotonic() < deadline:
        assert await first.renew("watcher-a")
        assert not await second.acquire("watcher-b")
        await asyncio.sleep(TTL / 4)


async def test_a_dead_holders_lease_is_taken_over_after_its_ttl(
    nc: NatsClient, layout: Layout, bucket: str
) -> None:
    """A holder that stops renewing loses the lease to the server's max_age; its late renewal fails."""
    first = await Lease.open(nc.jetstream(), bucket, layout, TTL)
    second = await Lease.open(nc.jetstream(), bucket, layout, TTL)
    assert await first.acquire("watcher-a")
    waited = await taken_within(second, "watcher-b", 10 * TTL)
    assert waited >= TTL * 0.5  # not before the lease could have expired
    assert not await first.renew("watcher-a")
    assert not first.held
    holder = await first.holder()
    assert holder is not None and holder.holder == "watcher-b"


async def test_a_released_lease_is_taken_at_once(nc: NatsClient, layout: Layout, bucket: str) -> None:
    """A clean stop releases the lease: the waiting watcher takes it without waiting for the TTL."""
    first = await Lease.open(nc.jetstream(), bucket, layout, 60.0)
    second = await Lease.open(nc.jetstream(), bucket, layout, 60.0)
    assert await first.acquire("watcher-a")
    await first.release()
    assert await second.acquire("watcher-b")
    assert await second.renew("watcher-b")


async def test_an_existing_bucket_keeps_its_ttl(nc: NatsClient, layout: Layout, bucket: str) -> None:
    """A watcher configured with another TTL uses the bucket's: the server will not reopen it otherwise."""
    await Lease.open(nc.jetstream(), bucket, layout, TTL)
    other = await Lease.open(nc.jetstream(), bucket, layout, 30.0)
    assert other.ttl == TTL


async def test_cursor_and_last_pass_read_back_as_saved(nc: NatsClient, layout: Layout, bucket: str) -> None:
    """What one watcher saved, the next reads back exactly; nothing saved reads as a fresh cursor."""
    state = await WatchState.open(nc.jetstream(), bucket, layout)
    assert await state.cursor() == WatchCursor()
    assert await state.last_pass() is None
    cursor = WatchCursor(high_water=42, started=True, full_from=7, full_through=40, last_full_at=1.5)
    record = PassRecord(
        holder="a", started_at=1.0, finished_at=2.0, interval=5.0, waiting={"ambiguous_match": 2}
    )
    await state.save_cursor(cursor)
    await state.save_pass(record)
    fresh = await WatchState.existing(nc.jetstream(), bucket, layout)
    assert fresh is not None
    assert await fresh.cursor() == cursor
    assert await fresh.last_pass() == record
    assert await WatchState.existing(nc.jetstream(), f"{bucket}_NONE", layout) is None


class Stop:
    requested = False

    async def sleep(self, seconds: float) -> bool:
        return self.requested


async def test_a_pass_whose_lease_was_taken_over_stops_at_its_next_step(
    nc: NatsClient, layout: Layout, bucket: str
) -> None:
    """The guard renews once a third of the TTL passed; a holder slower than its TTL finds the lease
    taken at its next renewal, and its pass stops there."""
    first = await Lease.open(nc.jetstream(), bucket, layout, TTL)
    second = await Lease.open(nc.jetstream(), bucket, layout, TTL)
    assert await first.acquire("watcher-a")
    guard = LeaseGuard(first, "watcher-a", Stop())
    assert await guard.proceed()
    await taken_within(second, "watcher-b", 10 * TTL)  # watcher-a stalled past its TTL
    assert not await guard.proceed()
    stop = Stop()
    stop.requested = True
    assert not await LeaseGuard(second, "watcher-b", stop).proceed()  # SIGTERM: stop whatever the lease
