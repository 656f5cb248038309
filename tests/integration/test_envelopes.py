"""The envelope watch on a real NATS server: what reaches `content.published.v1` is recorded in the ledger
and handed to the delivery waiting for it; other publishers' events are not its business."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from backfill.adapters.jetstream.envelopes import EnvelopeWatch
from backfill.core.ledger import LocalLedger

TOPIC = "content.published.v1"


@pytest.fixture
async def watch(nc: NatsClient) -> AsyncIterator[tuple[EnvelopeWatch, LocalLedger]]:
    ledger = LocalLedger()
    watching = EnvelopeWatch(ledger)
    await watching.start(nc)
    yield watching, ledger
    await watching.stop()


def envelope(envelope_id: str, **fields: Any) -> bytes:
    body = {"id": envelope_id, "topic": TOPIC, "ts": "2025-01-01T00:00:00Z", "version": "v1", "payload": {}}
    return json.dumps({**body, **fields}).encode()


async def test_a_backfill_envelope_is_recorded_then_handed_to_its_waiting_delivery(
    nc: NatsClient, watch: tuple[EnvelopeWatch, LocalLedger]
) -> None:
    watching, ledger = watch
    with watching.expect("cid-1") as expected:
        await nc.publish(TOPIC, envelope("env-1", source="backfill", correlation_id="cid-1"))
        assert await expected.wait(5) == "env-1"
        assert ledger.envelopes == {"cid-1": "env-1"}  # in the ledger before the delivery goes on


async def test_other_events_on_the_topic_are_neither_recorded_nor_taken(
    nc: NatsClient, watch: tuple[EnvelopeWatch, LocalLedger]
) -> None:
    """PMOVES' live publishing (another source), events without a correlation id, and bytes that are no
    envelope pass by; the backfill's own envelope after them still arrives."""
    watching, ledger = watch
    with watching.expect("cid-2") as expected:
        await nc.publish(TOPIC, envelope("live", source="agent-zero", correlation_id="cid-2"))
        await nc.publish(TOPIC, envelope("anonymous", source="backfill"))
        await nc.publish(TOPIC, b"\xff not json")
        await nc.publish(TOPIC, envelope("ours", source="backfill", correlation_id="cid-2"))
        assert await expected.wait(5) == "ours"
    assert ledger.envelopes == {"cid-2": "ours"}


async def test_nothing_arriving_is_none_after_the_wait(watch: tuple[EnvelopeWatch, LocalLedger]) -> None:
    watching, _ = watch
    started = time.monotonic()
    with watching.expect("cid-3") as expected:
        assert await expected.wait(0.2) is None
    assert time.monotonic() - started >= 0.2


async def test_every_replica_records_what_any_publishes_the_first_envelope_staying(nc: NatsClient) -> None:
    """Two watches (two replicas) on one ledger; a second envelope of the same row changes nothing."""
    ledger = LocalLedger()
    replicas = [EnvelopeWatch(ledger), EnvelopeWatch(ledger)]
    for replica in replicas:
        await replica.start(nc)
    try:
        with replicas[1].expect("cid-4") as expected:
            await nc.publish(TOPIC, envelope("first", source="backfill", correlation_id="cid-4"))
            await nc.publish(TOPIC, envelope("second", source="backfill", correlation_id="cid-4"))
            assert await expected.wait(5) == "first"
        deadline = time.monotonic() + 5
        while not all(replica.seen == 2 for replica in replicas):
            assert time.monotonic() < deadline, [replica.seen for replica in replicas]
            await asyncio.sleep(0.01)
        await nc.flush()
        for replica in replicas:
            await replica.stop()  # waits for what it is still recording
        assert ledger.envelopes == {"cid-4": "first"}
    finally:
        for replica in replicas:
            await replica.stop()  # a second stop is harmless


async def test_an_expectation_is_blind_once_its_connection_dropped_while_it_waited() -> None:
    """A server restarted under the watch: an expectation open across it could have missed its envelope
    (blind), one begun after the reconnect could not, and one begun while the connection was down is."""
    import nats

    from backfill_doubles.natsserver import NatsServerProcess

    server = NatsServerProcess(jetstream=False)
    server.start()
    nc = await nats.connect(server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    watching = EnvelopeWatch(LocalLedger())
    await watching.start(nc)
    try:
        with watching.expect("across") as across:
            assert not across.blind()
            server.stop()
            await wait_until(lambda: not nc.is_connected)
            with watching.expect("while-down") as while_down:
                server.start()
                await wait_until(lambda: nc.is_connected)
                assert across.blind() and while_down.blind()
        with watching.expect("after") as after:
            assert not after.blind()
    finally:
        await watching.stop()
        await nc.close()
        server.close()


async def wait_until(condition: Any, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.02)
