"""What reaches NATS: every envelope Agent Zero publishes on `content.published.v1`, watched on core NATS.

Agent Zero answers 200 once the envelope is in its NATS client's buffer (`nc.publish`, no flush), and it
can publish and then die before it answers. So a republish is confirmed by its envelope, not by the
answer. Every worker subscribes to the topic on its own connection (no JetStream: nothing is stored)
and, for every envelope whose `source` is `backfill` and that carries a correlation id:

- records it in the ledger (the first one per correlation id stays), whichever replica published it:
  a redelivery on any replica finds it, even when the replica that published died before its answer;
- then hands its id to the delivery of this process waiting for that correlation id (`expect`).

What this cannot see is an envelope published while this worker's own connection is down (between the
server losing it and the resubscription after the reconnect); another replica connected at that moment
records it, and the waiting delivery reads the ledger before it publishes again (docs/upstreams.md §1).
An expectation knows when it was blind like that (`blind`): its connection dropped, or was down, while
it waited, so not seeing its envelope proves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client as NatsClient

from backfill.adapters.jetstream.listen import Subscriptions, subscribe
from backfill.core.errors import BusError
from backfill.core.ports import DeliveryLedger

log = logging.getLogger(__name__)
TOPIC = "content.published.v1"
SOURCE = "backfill"  # what the worker sends as `source`, and Agent Zero copies into the envelope


class _Envelope(msgspec.Struct):
    id: str
    source: str | None = None
    correlation_id: str | None = None


_decoder = msgspec.json.Decoder(_Envelope)


class Expectation:
    """One delivery waiting for the envelope of its correlation id."""

    def __init__(self, watch: EnvelopeWatch, correlation_id: str) -> None:
        self._watch = watch
        self.correlation_id = correlation_id
        self._link = watch.link()  # the connection it watches through, as it was when the wait began
        self._seen: str | None = None  # the id of the envelope that arrived
        self._recorded: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # once recorded

    def arrived(self) -> str | None:
        return self._seen

    def blind(self) -> bool:
        """Whether the watch could have missed the envelope: the connection was down when the wait began,
        is down now, or dropped (and came back) meanwhile."""
        return self._link is None or self._watch.link() != self._link

    async def wait(self, within: float) -> str | None:
        """The envelope's id once it has been seen and recorded (or its recording failed), or None
        when none arrived within `within` seconds. One that arrived in time is waited for while its
        recording is still under way."""
        if not self._recorded.done():
            await asyncio.wait({self._recorded}, timeout=within)  # (cancels nothing on the timeout)
            if self._seen is None:
                return None
        return await self._recorded

    def arrive(self, envelope_id: str) -> None:
        """The watch saw the envelope (the first one counts)."""
        if self._seen is None:
            self._seen = envelope_id

    def recorded(self) -> None:
        """The watch is done recording it: `wait` may return."""
        if self._seen is not None and not self._recorded.done():
            self._recorded.set_result(self._seen)

    def __enter__(self) -> Expectation:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._watch.forget(self)
        if not self._recorded.done():
            self._recorded.cancel()


class EnvelopeWatch:
    """`backfill.core.ports.EnvelopeWatch` on one core NATS subscription."""

    def __init__(self, ledger: DeliveryLedger, subject: str = TOPIC) -> None:
        self._ledger = ledger
        self._subject = subject
        self._waiting: dict[str, list[Expectation]] = {}
        self._recording: set[asyncio.Task[None]] = set()
        self._subscriptions: Subscriptions | None = None
        self._nc: NatsClient | None = None
        self.seen = 0  # backfill envelopes seen since start

    async def start(self, nc: NatsClient) -> None:
        """Subscribe; returns once the server has the subscription (what is published later is seen)."""
        self._subscriptions = await subscribe(nc, [self._subject], self._on_message)
        self._nc = nc

    def link(self) -> int | None:
        """Which unbroken stretch of the connection the watch is in (its reconnect count), None while it
        is down: two readings that differ mean the subscription was away in between."""
        if self._nc is None or not self._nc.is_connected:
            return None
        return int(self._nc.stats["reconnects"])

    async def stop(self) -> None:
        """Unsubscribe; what is being recorded gets its write finished."""
        if self._subscriptions is not None:
            with contextlib.suppress(BusError):
                await self._subscriptions.stop()
            self._subscriptions = None
        if self._recording:
            await asyncio.wait(set(self._recording), timeout=5)

    def expect(self, correlation_id: str) -> Expectation:
        expectation = Expectation(self, correlation_id)
        self._waiting.setdefault(correlation_id, []).append(expectation)
        return expectation

    def forget(self, expectation: Expectation) -> None:
        waiting = self._waiting.get(expectation.correlation_id, [])
        with contextlib.suppress(ValueError):
            waiting.remove(expectation)
        if not waiting:
            self._waiting.pop(expectation.correlation_id, None)

    def _on_message(self, _subject: str, data: bytes, _headers: dict[str, str]) -> None:
        try:
            envelope = _decoder.decode(data)
        except msgspec.DecodeError:
            return  # not an envelope: not ours to judge
        if envelope.source != SOURCE or not envelope.correlation_id:
            return  # another publisher's event (PMOVES' live publishing uses the same topic)
        self.seen += 1
        waiting = list(self._waiting.get(envelope.correlation_id, ()))
        for expectation in waiting:
            expectation.arrive(envelope.id)
        task = asyncio.create_task(self._record(envelope.correlation_id, envelope.id, waiting))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, correlation_id: str, envelope_id: str, waiting: Iterable[Expectation]) -> None:
        try:
            await self._ledger.record_envelope(correlation_id, envelope_id)
        except BusError as exc:  # the waiting delivery still has it, and the merge records it in the row
            log.warning("envelope seen but not recorded", extra={"envelope": envelope_id, "error": str(exc)})
        finally:
            for expectation in waiting:
                expectation.recorded()
