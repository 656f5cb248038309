"""The delivery ledger on a real JetStream key-value bucket: first failures shared by every replica,
envelopes seen per correlation id (the first stays), ids answered but never seen, unreadable entries
repaired."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from backfill.adapters.jetstream.ledger import Ledger
from backfill.core.errors import BusError
from backfill.core.ledger import Alive, FailedDelivery, Failing, LocalLedger, count_failure, key_token
from tests.support.clock import Clock


@pytest.fixture
async def bucket(nc: NatsClient) -> AsyncIterator[str]:
    name = f"LEDGER_{uuid.uuid4().hex[:10]}"
    yield name
    await nc.jetstream().delete_key_value(name)


def failed(clock: Clock) -> FailedDelivery:
    """A failed delivery beginning now whose retry is due far enough away that no clock move of these
    tests counts as waiting in the queue."""
    return FailedDelivery(started=clock.now, delay=1000.0)


async def replicas(nc: NatsClient, bucket: str, clock: Clock) -> tuple[Ledger, Ledger]:
    opened = await Ledger.open(nc.jetstream(), bucket, budget_seconds=600)
    return opened, Ledger(opened._kv, clock)  # a second replica on the same bucket


async def test_the_first_failure_counts_for_every_replica_until_settled(nc: NatsClient, bucket: str) -> None:
    clock = Clock()
    first, second = await replicas(nc, bucket, clock)
    first._clock = clock
    assert await first.retrying_for("BF", 7, failed(clock)) == 0.0
    clock.now += 90
    assert await second.retrying_for("BF", 7, failed(clock)) == 90.0  # another replica, a later delivery
    assert await second.retrying_for("BF", 8, failed(clock)) == 0.0  # another message has its own count
    await first.settled("BF", 7)
    clock.now += 30
    assert (
        await second.retrying_for("BF", 7, failed(clock)) == 0.0
    )  # a settled message starts again (e.g. a replay)


async def test_the_first_envelope_seen_for_a_correlation_id_is_the_one_every_replica_finds(
    nc: NatsClient, bucket: str
) -> None:
    """Every replica records what it sees; the first one recorded stays (a later duplicate, or the same
    envelope recorded by a second replica, changes nothing)."""
    ledger, other = await replicas(nc, bucket, Clock())
    assert await ledger.envelope_seen("cid-5") is None
    await ledger.record_envelope("cid-5", "env-1")
    await other.record_envelope("cid-5", "env-1")
    await other.record_envelope("cid-5", "env-2")
    assert await other.envelope_seen("cid-5") == "env-1"
    assert await other.envelope_seen("cid-6") is None
    odd = "not key-safe / ünïcode"
    await ledger.record_envelope(odd, "env-3")
    assert await other.envelope_seen(odd) == "env-3"
    assert key_token(odd) != key_token("not key-safe / unicode")


async def test_ids_answered_but_never_seen_are_kept_and_counted(nc: NatsClient, bucket: str) -> None:
    ledger, other = await replicas(nc, bucket, Clock())
    assert await ledger.note_unconfirmed("cid-1", "lost-1") == 1
    assert await other.note_unconfirmed("cid-1", "lost-1") == 1  # the same id twice counts once
    assert await other.note_unconfirmed("cid-1", "lost-2") == 2
    assert await ledger.note_unconfirmed("cid-2", "lost-3") == 1


async def test_an_unreadable_first_failure_is_replaced_not_fatal(nc: NatsClient, bucket: str) -> None:
    clock = Clock()
    ledger, _ = await replicas(nc, bucket, clock)
    ledger._clock = clock
    await ledger._kv.put("failure.BF.9", b"\xff not a time")
    assert await ledger.retrying_for("BF", 9, failed(clock)) == 0.0
    clock.now += 5
    assert await ledger.retrying_for("BF", 9, failed(clock)) == 5.0


async def test_a_write_to_a_lost_bucket_is_a_bus_error(nc: NatsClient, bucket: str) -> None:
    """(A read of a lost bucket finds nothing, as nats-py reports a missing stream as a missing key.)"""
    ledger, _ = await replicas(nc, bucket, Clock())
    await nc.jetstream().delete_key_value(bucket)
    with pytest.raises(BusError, match="ledger"):
        await ledger.record_envelope("cid", "e")
    await nc.jetstream().create_key_value(bucket=bucket)  # for the fixture's cleanup


async def test_the_local_ledger_keeps_the_same_rules() -> None:
    clock = Clock()
    ledger = LocalLedger(clock)
    assert await ledger.retrying_for("BF", 1, failed(clock)) == 0.0
    clock.now += 12
    assert await ledger.retrying_for("BF", 1, failed(clock)) == 12.0
    await ledger.settled("BF", 1)
    assert await ledger.retrying_for("BF", 1, failed(clock)) == 0.0
    await ledger.record_envelope("cid", "e")
    await ledger.record_envelope("cid", "later")
    assert await ledger.envelope_seen("cid") == "e"
    assert await ledger.note_unconfirmed("cid", "lost") == 1


async def test_liveness_is_noted_read_back_and_forgotten_when_settled(nc: NatsClient, bucket: str) -> None:
    ledger, other = await replicas(nc, bucket, Clock())
    assert await other.alive("BF", 4) is None
    await ledger.note_alive("BF", 4, Alive(until=123.5, delivery=2))
    assert await other.alive("BF", 4) == Alive(until=123.5, delivery=2)
    await ledger._kv.put("alive.BF.5", b"garbage")
    assert await other.alive("BF", 5) is None  # unreadable: judged as if nothing had been noted
    await other.settled("BF", 4)
    assert await ledger.alive("BF", 4) is None


async def test_time_waiting_in_the_queue_or_for_the_pace_does_not_count(nc: NatsClient, bucket: str) -> None:
    clock = Clock()
    ledger, other = await replicas(nc, bucket, clock)
    ledger._clock = clock
    assert await ledger.retrying_for("BF", 11, FailedDelivery(started=clock.now, delay=10)) == 0.0
    clock.now += 100  # redelivered 90 s after it was due (behind a paced backlog), waited 30 s for a token
    late = FailedDelivery(started=clock.now - 40, delay=10, paced=30)  # began 50 s after due
    assert await other.retrying_for("BF", 11, late) == 100 - 50 - 30
    clock.now += 10  # the next delivery comes right when due
    assert await ledger.retrying_for("BF", 11, FailedDelivery(started=clock.now, delay=10)) == 30.0


def test_count_failure_moves_the_start_by_time_not_retrying() -> None:
    first = count_failure(None, FailedDelivery(started=0, delay=5), now=1)
    assert first == Failing(first=1, due=6)
    on_time = count_failure(first, FailedDelivery(started=6, delay=5, paced=0), now=7)
    assert on_time == Failing(first=1, due=12)
    queued = count_failure(on_time, FailedDelivery(started=40, delay=5, paced=3), now=44)
    assert queued == Failing(first=1 + 28 + 3, due=49)
    assert count_failure(queued, FailedDelivery(started=0, delay=1, paced=10_000), now=50).first == 50
