"""The worker's pull loop: fetch only as many messages as there are free slots, handle each in a task.

Slots are refilled at least half a fetch batch at a time (at once when nothing is in flight), so the
messages of one fetch run side by side and share their batched lookups.

Nothing here assumes the worker is alone: replicas share the durable consumer and JetStream hands each
message to one of them. Stopping: no new fetches, in-flight work gets a grace period, what cannot
finish is nak'd at once so another replica takes it without waiting for ack_wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from backfill.adapters.agent_zero_circuit import AgentZeroCircuit
from backfill.adapters.jetstream.bus import Bus
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.pausing import PauseState
from backfill.adapters.jetstream.work import Delivery, WorkQueue
from backfill.core.errors import BusError
from backfill.core.ledger import Alive, FailedDelivery, LocalLedger
from backfill.core.outcome import (
    INVALID_MESSAGE,
    Ack,
    DeadLetter,
    Outcome,
    Retry,
    RetryPolicy,
    Settled,
    backoff_delay,
    resolutions_of,
    settle_retry,
)
from backfill.core.pace import NoPace
from backfill.core.ports import DeliveryLedger, Pace
from backfill.core.related import OFF as YOUTUBE_OFF
from backfill.core.wire import InvalidMessage, decode_request
from backfill.metrics import Metrics
from backfill.pipeline import RowProcessor
from worker.settle import Settler

log = logging.getLogger(__name__)


class Consumer:
    def __init__(
        self,
        bus: Bus,
        layout: Layout,
        processor: RowProcessor,
        settler: Settler,
        metrics: Metrics,
        policy: RetryPolicy,
        *,
        concurrency: int,
        fetch_batch: int,
        fetch_timeout: float,
        ack_wait: float,
        pace: Pace | None = None,
        ledger: DeliveryLedger | None = None,
        pause: PauseState | None = None,
        circuit: AgentZeroCircuit | None = None,
    ) -> None:
        self._pace: Pace = pace or NoPace()
        self._circuit = circuit
        self._pause = pause or PauseState()
        self._stop = asyncio.Event()
        self._ledger: DeliveryLedger = ledger or LocalLedger()
        self._bus = bus
        self._layout = layout
        self._processor = processor
        self._settler = settler
        self._metrics = metrics
        self._policy = policy
        self._concurrency = concurrency
        self._fetch_batch = fetch_batch
        self._fetch_timeout = fetch_timeout
        # The messages of one fetch start together, so their row reads and Jellyfin lookups are batched
        # (backfill.adapters.batching); refilling one slot at a time would defeat that, refilling only whole
        # batches made a lone message wait for the batch in flight (bench: overhead p50 40 ms). Half a
        # batch keeps both: a busy worker refills in groups, a quiet one fetches at once.
        self._refill_at = max(min(fetch_batch, concurrency) // 2, 1)
        self._ack_wait = ack_wait
        self._heartbeat_every = max(ack_wait / 3, 0.5)
        self._noted: set[int] = set()  # stream seqs with a liveness note to forget once settled
        self._tasks: set[asyncio.Task[None]] = set()
        # id(message) -> (message, when it started or was last reported in progress)
        self._working: dict[int, tuple[Delivery, float]] = {}
        metrics.in_flight.set_function(lambda: len(self._tasks))  # read on scrape, not per message
        self._slot_freed = asyncio.Event()
        self.bound = False

    async def run(self, stop: asyncio.Event, grace: float) -> None:
        self._stop = stop
        queue = await WorkQueue.bind(self._bus.js, self._layout.stream, self._layout.durable)
        self.bound = True
        heartbeats = asyncio.create_task(self._heartbeats())
        try:
            while not stop.is_set():
                if self._pause.by_switch:  # `producer pause`: fetch nothing until resumed
                    await self._pause.wait_running(stop)
                    continue
                if self._circuit is not None and self._circuit.holds_fetch():  # Agent Zero is out
                    await self._wait_for_circuit(stop)
                    continue
                slots = self._concurrency - len(self._tasks)
                free = min(slots, self._pace.headroom())
                if free <= 0 or (self._tasks and slots < self._refill_at):
                    await self._wait_for_slot(stop)
                    continue
                for msg in await self._fetch(queue, min(free, self._fetch_batch), stop):
                    self._spawn(msg)
                # let them start: a republish message takes its turn at the pace as it starts, and the
                # next fetch's size counts it
                await asyncio.sleep(0)
        finally:
            self.bound = False
            self._pace.close()  # what waits for a pace token is handed back now, not after the grace
            if self._circuit is not None:
                self._circuit.stop()  # so is what waits for Agent Zero to come back
            await self._finish(grace)
            heartbeats.cancel()
            await queue.close()

    async def _fetch(self, queue: WorkQueue, batch: int, stop: asyncio.Event) -> list[Delivery]:
        try:
            return await queue.fetch(batch, self._fetch_timeout)
        except BusError as exc:  # disconnected, reconnecting: the client reconnects on its own
            log.warning("fetch failed, retrying", extra={"error": str(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            return []

    async def _wait_for_slot(self, stop: asyncio.Event) -> None:
        self._slot_freed.clear()
        waiters = [asyncio.ensure_future(self._slot_freed.wait()), asyncio.ensure_future(stop.wait())]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()

    async def _wait_for_circuit(self, stop: asyncio.Event) -> None:
        """Until Agent Zero's circuit changes (or a second passes: what it holds may have moved on)."""
        assert self._circuit is not None
        waiters = [asyncio.ensure_future(self._circuit.changed()), asyncio.ensure_future(stop.wait())]
        _, pending = await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()

    def _spawn(self, msg: Delivery) -> None:
        task = asyncio.create_task(self._handle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()

    async def _handle(self, msg: Delivery) -> None:
        started = time.perf_counter()
        self._working[id(msg)] = (msg, time.monotonic())
        if self._pause.by_switch and not await self._held_through_pause(msg):
            return
        began = time.time()  # wall clock, shared with other replicas through the ledger
        try:
            outcome = await self._decide_safely(msg, began)
            label = await self._settle_safely(msg, outcome)
            if label in (Settled.DONE, Settled.DEAD_LETTERED):
                for method in resolutions_of(outcome):
                    self._metrics.resolutions.labels(method).inc()
            if label is Settled.DONE and isinstance(outcome, Ack):
                self._metrics.youtube_links.labels(outcome.youtube or YOUTUBE_OFF).inc()
        except asyncio.CancelledError:
            with contextlib.suppress(BusError):
                await asyncio.shield(msg.nak())  # shutting down: hand it to another replica now
            raise
        finally:
            self._working.pop(id(msg), None)
        self._metrics.messages.labels(label).inc()
        self._metrics.processing.labels(label).observe(time.perf_counter() - started)

    async def _held_through_pause(self, msg: Delivery) -> bool:
        """A message fetched just as the pause came in waits here (kept alive by the heartbeats) and is
        worked on after resume; a shutdown during the pause hands it back at once. True: go on."""
        await self._pause.wait_running(self._stop)
        if not self._pause.by_switch:
            return True
        self._working.pop(id(msg), None)
        with contextlib.suppress(BusError):
            await msg.nak()
        return False

    async def _decide_safely(self, msg: Delivery, began: float) -> Outcome:
        """`_decide`, where a bug costs this message a retry (in the end a dead letter), never the loop."""
        try:
            return await self._decide(msg, began)
        except Exception as exc:
            log.exception("unexpected error handling a message", extra={"subject": msg.subject[:200]})
            attempt = msg.attempt
            retry = Retry(backoff_delay(attempt, self._policy), f"internal error: {exc!r}"[:500])
            return settle_retry(retry, attempt, await self._retrying_for(msg, began, retry), self._policy)

    async def _settle_safely(self, msg: Delivery, outcome: Outcome) -> Settled:
        try:
            label = await self._settler.settle(msg, outcome)
            seq = msg.seq
            if label is Settled.RETRIED and isinstance(outcome, Retry):
                await self._note_alive(msg, outcome.delay + self._ack_wait)  # the redelivery is due by then
            elif label is not Settled.RETRIED and (msg.attempt > 1 or seq in self._noted):
                self._noted.discard(seq)
                await self._ledger.settled(self._layout.stream, seq)
        except Exception:  # unsettled: JetStream redelivers it after ack_wait
            log.exception("unexpected error settling a message", extra={"subject": msg.subject[:200]})
            return Settled.RETRIED
        return label

    async def _note_alive(self, msg: Delivery, for_seconds: float) -> bool:
        """Tell the sweepers this message is still JetStream's to deliver (a failure or a heartbeat)."""
        seq = msg.seq
        alive = Alive(until=time.time() + for_seconds, delivery=msg.attempt)
        try:
            await self._ledger.note_alive(self._layout.stream, seq, alive)
        except BusError as exc:  # the sweeper then waits out the longest life such a message can have
            log.warning("liveness not noted", extra={"seq": seq, "error": str(exc)})
            return False
        return True

    async def _decide(self, msg: Delivery, began: float) -> Outcome:
        attempt = msg.attempt
        try:
            request = decode_request(msg.data, msg.subject, self._layout.prefix)
        except InvalidMessage as exc:
            return DeadLetter(INVALID_MESSAGE, f"{exc}; raw bytes kept in this dead letter")
        judged: list[tuple[Retry, Outcome]] = []  # the one retry judged so far, and its verdict

        async def settle(retry: Retry) -> Outcome:
            """The retry, or a dead letter past the delivery limit or the retry budget; judged once
            (the ledger notes the failure), whether the processor asks first or only this method."""
            if not judged or judged[0][0] is not retry:
                age = await self._retrying_for(msg, began, retry)
                judged[:] = [(retry, settle_retry(retry, attempt, age, self._policy))]
            return judged[0][1]

        outcome = await self._processor.handle(request, attempt, settle)
        if not isinstance(outcome, Retry):
            return outcome
        return await settle(outcome)

    async def _retrying_for(self, msg: Delivery, began: float, retry: Retry) -> float:
        """How long this message has been retrying: from its first failed delivery, on any replica; time
        spent waiting in the queue, or for the pace, never counts."""
        delivery = FailedDelivery(started=began, delay=retry.delay, paced=retry.paced)
        try:
            return await self._ledger.retrying_for(self._layout.stream, msg.seq, delivery)
        except BusError as exc:  # the delivery limit still bounds the retries
            log.warning("retry budget unknown; counting deliveries only", extra={"error": str(exc)})
            return 0.0

    async def _heartbeats(self) -> None:
        """`in_progress` keeps a slow message from being redelivered while it is still being worked on.

        One loop for all messages in flight (a task per message cost measurable CPU): every message
        worked on for longer than a third of ack_wait since its last report is reported again.
        """
        every = self._heartbeat_every
        while True:
            await asyncio.sleep(min(every / 4, 1.0))
            now = time.monotonic()
            due = [key for key, (_, since) in self._working.items() if now - since >= every]
            for key in due:
                entry = self._working.get(key)
                if entry is not None:  # still being worked on
                    self._working[key] = (entry[0], now)
                    with contextlib.suppress(BusError):
                        await entry[0].in_progress()
                    if await self._note_alive(entry[0], self._ack_wait):
                        # forgotten when settled (a redelivered message always is: it was delivered before)
                        self._noted.add(entry[0].seq)

    async def _finish(self, grace: float) -> None:
        if not self._tasks:
            return
        log.info("finishing in-flight work", extra={"in_flight": len(self._tasks), "grace_seconds": grace})
        _, unfinished = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished)
            log.warning("grace period over; nak'd unfinished messages", extra={"count": len(unfinished)})
