"""The sweeper judges a delivery, not a lifetime: a message JetStream will still deliver (waiting out a
retry delay, or worked on slowly) is never swept; one it has given up on is."""

from __future__ import annotations

import contextlib
import time

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from backfill.adapters.jetstream.bus import AckPublisher
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.sweeper import Sweeper
from backfill.core.ledger import Alive, LocalLedger
from backfill.core.wire import request_subject
from backfill.metrics import Metrics
from tests.integration.test_layout import laid_out
from tests.support.clock import Clock

ACK_WAIT, MAX_DELIVER, GRACE = 1.0, 3, 0.5


def sweeper_for(nc: NatsClient, layout: Layout, ledger: LocalLedger, clock: Clock) -> Sweeper:
    publisher = AckPublisher(nc)
    return Sweeper(
        nc,
        nc.jetstream(),
        layout,
        publisher,
        Metrics(CollectorRegistry(), "v"),
        "w",
        "v",
        ledger,
        ack_wait=ACK_WAIT,
        max_deliver=MAX_DELIVER,
        grace=GRACE,
        clock=clock,
    )


async def test_judgement_follows_the_last_known_delivery(nc: NatsClient, layout_env: dict[str, str]) -> None:
    _, layout = await laid_out(nc, layout_env)
    ledger, clock = LocalLedger(), Clock()
    sweeper = sweeper_for(nc, layout, ledger, clock)
    assert not await sweeper._given_up(1, ACK_WAIT)  # a delivery may have started just before the scan
    assert not await sweeper._given_up(1, MAX_DELIVER * ACK_WAIT)  # nothing noted: deliveries left
    assert await sweeper._given_up(1, MAX_DELIVER * ACK_WAIT + GRACE)
    await ledger.note_alive(layout.stream, 2, Alive(until=clock.now + 900, delivery=1))  # a long Retry-After
    assert not await sweeper._given_up(2, 10_000)  # seen for hours: still JetStream's to deliver
    clock.now += 900 + (MAX_DELIVER - 1) * ACK_WAIT
    assert not await sweeper._given_up(2, 10_000)
    clock.now += GRACE
    assert await sweeper._given_up(2, 10_000)


async def test_a_message_waiting_out_a_retry_delay_is_not_swept_and_is_redelivered(
    nc: NatsClient, layout_env: dict[str, str]
) -> None:
    """Real JetStream: a nak with a delay longer than the scan's patience; the scan leaves it, JetStream
    delivers it again."""
    js, layout = await laid_out(nc, layout_env)
    await js.publish(request_subject(layout.prefix, 1), b"{}")
    psub = await js.pull_subscribe_bind(layout.durable, stream=layout.stream)
    (msg,) = await psub.fetch(1, timeout=5)
    delay = 3.0
    await msg.nak(delay=delay)
    ledger = LocalLedger()
    await ledger.note_alive(
        layout.stream, msg.metadata.sequence.stream, Alive(time.time() + delay + ACK_WAIT, 1)
    )
    sweeper = sweeper_for(nc, layout, ledger, Clock())
    sweeper._clock = time.time
    started = time.monotonic()
    redelivered: list[Msg] = []
    while not redelivered:  # scan all through the retry delay, until JetStream delivers it again
        assert await sweeper.scan_once() == 0
        scanned_for = time.monotonic() - started
        assert scanned_for < delay + 10, "JetStream never delivered the message again"
        with contextlib.suppress(TimeoutError):  # the poll interval: nothing delivered within it
            redelivered = await psub.fetch(1, timeout=0.25)
    assert scanned_for >= ACK_WAIT + GRACE  # the last scan was past the old rule's patience, and left it
    (again,) = redelivered
    assert again.metadata.num_delivered == 2
    await again.ack()
    await psub.unsubscribe()
