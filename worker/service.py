"""One worker replica from start to stop: connect, set up what is missing, consume until `stop` is set.

Start-up waits out a NATS or JetStream that is not ready yet (leader elections, a restarting server)
and still stops at once when asked. The pieces are built by `backfill.wiring`; the pull loop is
`worker.consumer`, settling `worker.settle`, the gauges `worker.stats`, health `backfill.health`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry

from backfill.adapters.agent_zero_circuit import AgentZeroCircuit
from backfill.adapters.jetstream.bus import AckPublisher, Bus
from backfill.adapters.jetstream.envelopes import EnvelopeWatch
from backfill.adapters.jetstream.layout import Layout, ensure_layout
from backfill.adapters.jetstream.ledger import Ledger
from backfill.adapters.jetstream.pausing import PauseState, PauseSwitch, watch_switch
from backfill.adapters.jetstream.sweeper import Sweeper
from backfill.adapters.jetstream.work import consumer_state
from backfill.adapters.transport import HttpClient
from backfill.core.errors import BackfillError, BusError
from backfill.core.ports import Pace
from backfill.health import health_app, start_health_server
from backfill.metrics import Metrics
from backfill.republish import Republisher
from backfill.settings import BackfillSettings, NatsSettings, SettingsBundle, WorkerSettings
from backfill.wiring import (
    WORKER_FIRST_CONNECT,
    agent_zero_circuit,
    build_agent_zero,
    build_processor,
    build_republisher,
    connect_bus,
    http_client,
    layout_from,
    open_catalog,
    open_pace,
    retry_policy,
)
from worker.consumer import Consumer
from worker.settle import Settler
from worker.stats import refresh_forever, refresh_once

T = TypeVar("T")
log = logging.getLogger("worker")
SWEEP_GRACE = 30.0  # seconds past the last moment JetStream could still deliver a message


@dataclass(frozen=True)
class WorkerOptions:
    """The command line over the environment, resolved once."""

    concurrency: int
    fetch_batch: int  # never more than `concurrency`
    metrics_port: int
    grace: float
    exit_when_idle: float | None = None

    @classmethod
    def resolve(
        cls,
        worker: WorkerSettings,
        *,
        concurrency: int | None = None,
        fetch_batch: int | None = None,
        metrics_port: int | None = None,
        grace: float | None = None,
        exit_when_idle: float | None = None,
    ) -> WorkerOptions:
        """Each option given wins over its setting."""
        most = concurrency or worker.concurrency
        return cls(
            concurrency=most,
            fetch_batch=min(fetch_batch or worker.fetch_batch, most),
            metrics_port=worker.metrics_port if metrics_port is None else metrics_port,
            grace=worker.grace_seconds if grace is None else grace,
            exit_when_idle=exit_when_idle,
        )


async def watch_idle(bus: Bus, layout: Layout, idle_for: float, stop: asyncio.Event) -> None:
    """Set `stop` once the durable has nothing pending or unacknowledged for `idle_for` seconds."""
    quiet_since: float | None = None
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        await asyncio.sleep(min(0.5, idle_for))
        try:
            state = await consumer_state(bus.js, layout.stream, layout.durable)
        except BusError:
            continue
        busy = state.pending + state.ack_pending > 0
        quiet_since = None if busy else (quiet_since or loop.time())
        if quiet_since is not None and loop.time() - quiet_since >= idle_for:
            log.info("consumer idle; exiting", extra={"idle_seconds": idle_for})
            stop.set()


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None when `stop` is set first (SIGTERM while NATS is out of reach: a worker
    that retries its connection forever must still stop when asked)."""
    task, stopped = asyncio.ensure_future(work), asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, BackfillError):
        await task
    return None


async def patiently(
    step: Callable[[], Awaitable[T]], stop: asyncio.Event, first_delay: float = 0.5
) -> T | None:
    """JetStream may be electing leaders or still starting: retry a start-up step on a BusError (a
    config conflict is no BusError: it ends the worker), backing off up to 10 s. None: stopped first."""
    delay = first_delay
    while not stop.is_set():
        try:
            return await step()
        except BusError as exc:
            log.warning("JetStream not ready; retrying", extra={"error": str(exc), "retry_in": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 10.0)
    return None


async def pause_state_patiently(
    bus: Bus, bucket: str, layout: Layout, replicas: int, stop: asyncio.Event
) -> tuple[PauseSwitch, PauseState] | None:
    """The pause switch, and whether it is on before the first fetch (a new replicated bucket may still
    be electing its leader). None: stopped first."""
    switch: PauseSwitch | None = None
    state = PauseState()

    async def read() -> tuple[PauseSwitch, PauseState]:
        nonlocal switch
        switch = switch or await PauseSwitch.open(bus.js, bucket, layout, replicas=replicas)
        state.set_switch(await switch.state() is not None)
        return switch, state

    return await patiently(read, stop)


async def start_republishing(
    settings: SettingsBundle,
    bus: Bus,
    http: HttpClient,
    metrics: Metrics,
    ledger: Ledger,
    pace: Pace,
    resources: contextlib.AsyncExitStack,
    stop: asyncio.Event,
) -> tuple[Republisher, AgentZeroCircuit] | None:
    """Watch `content.published.v1` (republishes are confirmed by their envelopes) and put the circuit
    in front of Agent Zero; both end with `resources`. None: stopped first."""
    watch = EnvelopeWatch(ledger)

    async def watching() -> EnvelopeWatch:
        await watch.start(bus.nc)
        return watch

    if await patiently(watching, stop) is None:
        return None
    resources.push_async_callback(watch.stop)
    agent = build_agent_zero(settings, http, metrics.observe_upstream)
    circuit = agent_zero_circuit(settings, agent)
    resources.callback(circuit.stop)
    metrics.agent_zero_unavailable.set_function(lambda: int(circuit.open))
    return build_republisher(settings, agent, circuit, watch, ledger, pace, metrics), circuit


async def serve(settings: SettingsBundle, options: WorkerOptions, stop: asyncio.Event) -> None:
    """Run one replica until `stop` is set; in-flight work then gets `options.grace` seconds."""
    nats_cfg, worker_cfg = settings.get(NatsSettings), settings.get(WorkerSettings)
    version = settings.get(BackfillSettings).version
    worker_id = worker_cfg.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    registry = CollectorRegistry()
    metrics = Metrics(registry, version)
    async with contextlib.AsyncExitStack() as resources:
        http = http_client(settings, max_connections=max(options.concurrency * 2, 16))
        resources.push_async_callback(http.aclose)
        bus = await unless_stopped(
            connect_bus(
                settings,
                f"backfill-worker {worker_id}",
                reconnect_forever=True,
                first_connect=WORKER_FIRST_CONNECT,
            ),
            stop,
        )
        if bus is None:  # stopped while NATS was still out of reach
            log.info("stopped before NATS answered")
            return
        resources.push_async_callback(bus.drain)
        wanted = layout_from(settings)
        layout = await patiently(lambda: ensure_layout(bus.js, wanted), stop)
        if layout is None:
            return
        # the consumer's settings as the server has them win over the environment's
        ack_wait = layout.consumer.ack_wait or nats_cfg.ack_wait
        max_deliver = layout.consumer.max_deliver or nats_cfg.max_deliver
        policy = retry_policy(settings, layout)
        catalog = await resources.enter_async_context(open_catalog(settings, http, metrics.observe_upstream))
        publisher = AckPublisher(bus.nc)
        await publisher.start()
        resources.push_async_callback(publisher.close)
        ledger = await patiently(
            lambda: Ledger.open(
                bus.js, worker_cfg.ledger_bucket, worker_cfg.retry_budget_seconds, replicas=nats_cfg.replicas
            ),
            stop,
        )
        pausing = await pause_state_patiently(bus, nats_cfg.control_bucket, layout, nats_cfg.replicas, stop)
        if ledger is None or pausing is None:
            return
        switch, pause = pausing
        metrics.paused.set_function(lambda: int(pause.paused))
        pace = await patiently(lambda: open_pace(settings, bus), stop)
        if pace is None:
            return
        republishing = await start_republishing(settings, bus, http, metrics, ledger, pace, resources, stop)
        if republishing is None:
            return
        republisher, circuit = republishing
        consumer = Consumer(
            bus,
            layout,
            build_processor(settings, catalog, http, metrics, policy, pace, republisher),
            Settler(publisher, layout.prefix, layout.stream, worker_id, version, metrics),
            metrics,
            policy,
            concurrency=options.concurrency,
            fetch_batch=options.fetch_batch,
            fetch_timeout=worker_cfg.fetch_timeout,
            ack_wait=ack_wait,
            pace=pace,
            ledger=ledger,
            pause=pause,
            circuit=circuit,
        )

        def ready() -> tuple[bool, str]:
            if not bus.connected:
                return False, "not connected to NATS"
            return (True, "bound") if consumer.bound else (False, "not bound to the consumer")

        runner, bound = await start_health_server(
            health_app(registry, ready), worker_cfg.metrics_host, options.metrics_port
        )
        resources.push_async_callback(runner.cleanup)
        with contextlib.suppress(BusError):  # the periodic refresh below retries
            await refresh_once(bus, layout, metrics, pause)
        sweeper = Sweeper(
            bus.nc,
            bus.js,
            layout,
            publisher,
            metrics,
            worker_id,
            version,
            ledger,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            grace=SWEEP_GRACE,
        )
        await sweeper.listen()
        background = [
            asyncio.create_task(refresh_forever(bus, layout, metrics, worker_cfg.stats_interval, pause)),
            asyncio.create_task(watch_switch(switch, pause)),
            asyncio.create_task(sweeper.scan_forever(worker_cfg.sweep_interval)),
        ]
        if options.exit_when_idle is not None:
            background.append(asyncio.create_task(watch_idle(bus, layout, options.exit_when_idle, stop)))
        resources.callback(lambda: [task.cancel() for task in background])
        log.info(
            "worker started",
            extra={
                "worker": worker_id,
                "concurrency": options.concurrency,
                "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                "metrics_port": bound,
                "stream": layout.stream,
                "consumer": layout.durable,
            },
        )
        await consumer.run(stop, options.grace)
    log.info("worker stopped", extra={"worker": worker_id})
