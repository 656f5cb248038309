"""The delivery ledger on a real JetStream key-value bucket: first failures shared by every replica,
accepted events per row and version, unreadable entries repaired."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from backfill.errors import BusError
from backfill.ledger import Alive, Ledger, LocalLedger, version_token
from tests.support.clock import Clock


@pytest.fixture
async def bucket(nc: NatsClient) -> AsyncIterator[str]:
    name = f"LEDGER_{uuid.uuid4().hex[:10]}"
    yield name
    await nc.jetstream().delete_key_value(name)


async def replicas(nc: NatsClient, bucket: str, clock: Clock) -> tuple[Ledger, Ledger]:
    opened = await Ledger.open(nc.jetstream(), bucket, budget_seconds=600)
    return opened, Ledger(opened._kv, clock)  # a second replica on the same bucket


async def test_the_first_failure_counts_for_every_replica_until_settled(nc: NatsClient, bucket: str) -> None:
    clock = Clock()
    first, second = await replicas(nc, bucket, clock)
    first._clock = clock
    assert await first.retrying_for("BF", 7) == 0.0
    clock.now += 90
    assert await second.retrying_for("BF", 7) == 90.0  # another replica, a later delivery
    assert await second.retrying_for("BF", 8) == 0.0  # another message has its own count
    await first.settled("BF", 7)
    clock.now += 30
    assert await second.retrying_for("BF", 7) == 0.0  # a settled message starts again (e.g. a replay)


async def test_an_accepted_event_is_found_by_row_and_version_only(nc: NatsClient, bucket: str) -> None:
    ledger, other = await replicas(nc, bucket, Clock())
    assert await ledger.event_for(5, "2025-10-14") is None
    await ledger.record_event(5, "2025-10-14", "evt-1")
    assert await other.event_for(5, "2025-10-14") == "evt-1"
    assert await other.event_for(5, "2026-01-01") is None
    assert await other.event_for(6, "2025-10-14") is None
    odd = "v2 (october) / ünïcode"
    await ledger.record_event(5, odd, "evt-2")
    assert await other.event_for(5, odd) == "evt-2"
    assert version_token(odd) != version_token("v2 (october) / unicode")


async def test_an_unreadable_first_failure_is_replaced_not_fatal(nc: NatsClient, bucket: str) -> None:
    clock = Clock()
    ledger, _ = await replicas(nc, bucket, clock)
    ledger._clock = clock
    await ledger._kv.put("failure.BF.9", b"\xff not a time")
    assert await ledger.retrying_for("BF", 9) == 0.0
    clock.now += 5
    assert await ledger.retrying_for("BF", 9) == 5.0


async def test_a_write_to_a_lost_bucket_is_a_bus_error(nc: NatsClient, bucket: str) -> None:
    """(A read of a lost bucket finds nothing, as nats-py reports a missing stream as a missing key.)"""
    ledger, _ = await replicas(nc, bucket, Clock())
    await nc.jetstream().delete_key_value(bucket)
    with pytest.raises(BusError, match="ledger"):
        await ledger.record_event(1, "v", "e")
    await nc.jetstream().create_key_value(bucket=bucket)  # for the fixture's cleanup


async def test_the_local_ledger_keeps_the_same_rules() -> None:
    clock = Clock()
    ledger = LocalLedger(clock)
    assert await ledger.retrying_for("BF", 1) == 0.0
    clock.now += 12
    assert await ledger.retrying_for("BF", 1) == 12.0
    await ledger.settled("BF", 1)
    assert await ledger.retrying_for("BF", 1) == 0.0
    await ledger.record_event(1, "v", "e")
    assert await ledger.event_for(1, "v") == "e"


async def test_liveness_is_noted_read_back_and_forgotten_when_settled(nc: NatsClient, bucket: str) -> None:
    ledger, other = await replicas(nc, bucket, Clock())
    assert await other.alive("BF", 4) is None
    await ledger.note_alive("BF", 4, Alive(until=123.5, delivery=2))
    assert await other.alive("BF", 4) == Alive(until=123.5, delivery=2)
    await ledger._kv.put("alive.BF.5", b"garbage")
    assert await other.alive("BF", 5) is None  # unreadable: judged as if nothing had been noted
    await other.settled("BF", 4)
    assert await ledger.alive("BF", 4) is None


async def test_time_spent_waiting_for_the_pace_does_not_count(nc: NatsClient, bucket: str) -> None:
    clock = Clock()
    ledger, other = await replicas(nc, bucket, clock)
    ledger._clock = clock
    assert await ledger.retrying_for("BF", 11) == 0.0
    clock.now += 100
    assert await other.retrying_for("BF", 11, not_counting=30) == 70.0  # 30 s of it waited for a token
    clock.now += 10
    assert await ledger.retrying_for("BF", 11) == 80.0
    local = LocalLedger(clock)
    assert await local.retrying_for("BF", 11) == 0.0
    clock.now += 100
    assert await local.retrying_for("BF", 11, not_counting=30) == 70.0
