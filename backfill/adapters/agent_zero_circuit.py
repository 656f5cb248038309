"""The circuit in front of Agent Zero in a worker's event loop: republishes wait at it while Agent Zero
cannot publish, a probe task watches its health with backoff, and the worker fetches nothing new
meanwhile. The rules are `backfill.core.circuit`; this module only waits, wakes and probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from backfill.core.circuit import CLOSED, Circuit, CircuitRules, State, on_answered, on_not_ready, on_probe
from backfill.core.errors import UpstreamNotReady

log = logging.getLogger(__name__)
SERVICE = "agent_zero"
Health = Callable[[], Awaitable[bool | None]]  # `AgentZeroClient.nats_ready`


class AgentZeroCircuit:
    """`backfill.core.ports.PublishGate` for Agent Zero."""

    def __init__(
        self, health: Health, rules: CircuitRules, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._health = health
        self._rules = rules
        self._clock = clock
        self._circuit = CLOSED
        self._changed = asyncio.Event()  # replaced at every change: whoever waits looks again
        self._trial_taken = False
        self._waiting = 0  # publishes held at the circuit
        self._stopping = False
        self._prober: asyncio.Task[None] | None = None
        self._asking: asyncio.Future[bool | None] | None = None  # the health question in flight

    @property
    def open(self) -> bool:
        """Whether Agent Zero is held to be unable to publish (open, or on trial)."""
        return not self._circuit.closed

    @property
    def state(self) -> State:
        return self._circuit.state

    def holds_fetch(self) -> bool:
        """Whether the worker should fetch nothing new: while open, and while a trial is on (a trial
        with nothing held lets the worker fetch, so that a republish can be the trial)."""
        state = self._circuit.state
        return state is State.OPEN or (state is State.TRIAL and (self._waiting > 0 or self._trial_taken))

    async def changed(self) -> None:
        """Return at the next change of state."""
        await self._changed.wait()

    async def admit(self) -> float:
        """Wait until a publish may go out: at once while closed; while open, until it closes or this
        publish is the trial. The seconds waited. Raises `UpstreamNotReady` when the worker stops
        meanwhile (the message is handed back)."""
        started = self._clock()
        self._waiting += 1
        try:
            while True:
                state, changed = self._circuit.state, self._changed
                if state is State.CLOSED:
                    break
                if state is State.TRIAL and not self._trial_taken:
                    self._trial_taken = True
                    break
                if self._stopping:  # only what would wait is handed back; the rest finishes its work
                    raise UpstreamNotReady(SERVICE, "stopping while Agent Zero cannot publish")
                await changed.wait()
        finally:
            self._waiting -= 1
        return self._clock() - started

    async def not_ready(self, error: UpstreamNotReady) -> bool:
        """A publish found Agent Zero not ready (it published nothing). True: the circuit is open, the
        publish waits at it (`admit`) and tries again; False: it stays closed (a passing fault, or not
        yet enough to tell): retried as any failure."""
        if self._circuit.state is State.OPEN:
            return True
        ready = None if self._circuit.state is State.TRIAL else await self._probed()
        before = self._circuit
        after = on_not_ready(before, ready, self._clock(), self._rules)
        self._change(after)
        if after.state is State.OPEN and before.state is State.CLOSED:
            log.warning(
                "Agent Zero cannot publish; holding republishes and fetching nothing new until it can."
                " It gives up reconnecting to NATS after about 2 minutes: restart agent-zero if this lasts",
                extra={"error": str(error), "probe_in": after.interval},
            )
        if self._prober is None or self._prober.done():
            self._prober = asyncio.create_task(self._probe())
        return after.state is not State.CLOSED

    def answered(self) -> None:
        """Agent Zero answered a publish with anything but "not ready": it is back."""
        if self._circuit.closed:
            return
        log.info(
            "Agent Zero publishes again; resuming",
            extra={"unavailable_seconds": round(self._clock() - self._circuit.since, 1)},
        )
        self._change(on_answered(self._circuit))

    def abandoned(self) -> None:
        """An admitted publish ended without an answer either way (its message gave up): a trial it
        held goes to the next publish waiting."""
        if self._circuit.state is State.TRIAL and self._trial_taken:
            self._trial_taken = False
            self._wake()

    def stop(self) -> None:
        """The worker stops: every held publish gives up now (its message is handed back)."""
        self._stopping = True
        if self._prober is not None:
            self._prober.cancel()
        self._wake()

    def _change(self, circuit: Circuit) -> None:
        if circuit.state is not State.TRIAL:
            self._trial_taken = False
        if circuit != self._circuit:
            self._circuit = circuit
            self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _probe(self) -> None:
        """While open: probe Agent Zero's health when due; then wait for the trial's verdict."""
        while not self._stopping and not self._circuit.closed:
            circuit = self._circuit
            if circuit.state is State.TRIAL:
                await self.changed()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed(), max(circuit.probe_at - self._clock(), 0.0))
                continue  # changed meanwhile (closed by a publish that got through): look again
            ready = await self._probed()
            self._change(on_probe(self._circuit, ready, self._clock(), self._rules))
            log.info(
                "probed Agent Zero",
                extra={"nats_ready": ready, "state": self._circuit.state, "next_in": self._circuit.interval},
            )

    async def _probed(self) -> bool | None:
        """Agent Zero's health, asked once for all who want it at the same moment (a hundred publishes
        failing together ask once)."""
        if self._asking is None or self._asking.done():
            self._asking = asyncio.ensure_future(self._ask_health())
        return await asyncio.shield(self._asking)

    async def _ask_health(self) -> bool | None:
        """A probe that fails unexpectedly counts as "cannot publish" (logged): the probing goes on."""
        try:
            return await self._health()
        except Exception:
            log.exception("probing Agent Zero's health failed")
            return False
