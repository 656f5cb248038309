"""`worker`: consume backfill requests from JetStream until stopped (SIGTERM/SIGINT)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from backfill import version_text
from backfill.adapters.batching import Batcher, WriteBatcher, each_on_failure
from backfill.adapters.jetstream.bus import AckPublisher, connect
from backfill.adapters.jetstream.layout import Layout, ensure_layout
from backfill.adapters.jetstream.ledger import Ledger
from backfill.adapters.jetstream.pace import GlobalPace
from backfill.adapters.jetstream.pausing import PauseState, PauseSwitch, watch_switch
from backfill.adapters.transport import HttpClient, make_client
from backfill.core.errors import BackfillError, BusError, ConfigError, Exit
from backfill.core.model import Row
from backfill.core.outcome import RetryPolicy
from backfill.core.pace import NoPace, PaceConfig
from backfill.core.payload import MetaPatch
from backfill.core.ports import Catalog, Pace
from backfill.eventloop import event_loop_runner
from backfill.logs import setup_logging
from backfill.metrics import Metrics
from backfill.pipeline import RowProcessor
from backfill.settings import (
    AgentZeroSettings,
    BackfillSettings,
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    SettingsBundle,
    StorageSettings,
    WorkerSettings,
    YoutubeSettings,
    load_settings,
)
from backfill.wiring import build_agent_zero, build_enricher, layout_from, links_from, open_catalog
from worker.consumer import Consumer
from worker.health import health_app, start_health_server
from worker.settle import Settler
from worker.stats import refresh_forever, refresh_once
from worker.sweeper import Sweeper

T = TypeVar("T")
STOP_SIGNALS: list[signal.Signals] = []  # the signals that stopped this process, first first
EXAMPLES = """exit codes: 0 stopped by SIGTERM (or idle with --exit-when-idle), 2 configuration error,
3 NATS or an upstream cannot be used at start, 130 stopped by SIGINT (Ctrl-C), in-flight work drained

examples:
  worker                                   # one replica; settings from the environment
  worker --concurrency 32 --metrics-port 0
  worker --exit-when-idle 30               # one-shot: exit once the queue stays empty for 30 s
"""
log = logging.getLogger("worker")
SWEEP_GRACE = 30.0  # seconds past the last moment JetStream could still deliver a message
GROUPS = (
    NatsSettings,
    CatalogSettings,
    JellyfinSettings,
    AgentZeroSettings,
    StorageSettings,
    BackfillSettings,
    WorkerSettings,
    YoutubeSettings,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=version_text("worker"))
    parser.add_argument(
        "--concurrency", type=int, help="messages handled at once (env WORKER_CONCURRENCY, 128)"
    )
    parser.add_argument(
        "--fetch-batch", type=int, help="most messages per fetch (env WORKER_FETCH_BATCH, 32)"
    )
    parser.add_argument("--metrics-port", type=int, help="port for /metrics, /healthz, /readyz (0 = any)")
    parser.add_argument("--grace", type=float, help="seconds to finish in-flight work on SIGTERM (25)")
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit 0 once the consumer has had nothing pending or in flight for SECONDS (one-shot runs)",
    )
    return parser.parse_args(argv)


def policy_from(settings: SettingsBundle, layout: Layout) -> RetryPolicy:
    """Retries within the consumer's `max_deliver` as the server has it (see `ensure_layout`)."""
    worker = settings.get(WorkerSettings)
    return RetryPolicy(
        base_delay=worker.retry_base_delay,
        max_delay=worker.retry_max_delay,
        max_attempts=layout.consumer.max_deliver or settings.get(NatsSettings).max_deliver,
        budget_seconds=worker.retry_budget_seconds,
    )


async def watch_idle(js: JetStreamContext, layout: Layout, idle_for: float, stop: asyncio.Event) -> None:
    """Set `stop` once the durable has nothing pending or unacknowledged for `idle_for` seconds."""
    quiet_since: float | None = None
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        await asyncio.sleep(min(0.5, idle_for))
        try:
            info = await js.consumer_info(layout.stream, layout.durable)
        except (NatsError, TimeoutError):
            continue
        busy = (info.num_pending or 0) + (info.num_ack_pending or 0) > 0
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


async def patiently(step: Callable[[], Awaitable[None]], stop: asyncio.Event) -> bool:
    """JetStream may be electing leaders or still starting: retry a start-up step on a BusError (a
    config conflict is no BusError: it ends the worker). False: stopped before it succeeded."""
    delay = 0.5
    while not stop.is_set():
        try:
            await step()
            return True
        except BusError as exc:
            log.warning("JetStream not ready; retrying", extra={"error": str(exc), "retry_in": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 10.0)
    return False


async def ensure_layout_patiently(js: JetStreamContext, wanted: Layout, stop: asyncio.Event) -> Layout | None:
    """The layout in force (missing parts created, existing settings kept). None: stopped first."""
    in_force: Layout | None = None

    async def ensure() -> None:
        nonlocal in_force
        in_force = await ensure_layout(js, wanted)

    return in_force if await patiently(ensure, stop) else None


async def pause_state_patiently(
    js: JetStreamContext, bucket: str, layout: Layout, replicas: int, stop: asyncio.Event
) -> tuple[PauseSwitch, PauseState] | None:
    """The pause switch, and whether it is on before the first fetch (a new replicated bucket may still
    be electing its leader). None: stopped first."""
    switch: PauseSwitch | None = None
    state = PauseState()

    async def read() -> None:
        nonlocal switch
        switch = switch or await PauseSwitch.open(js, bucket, layout, replicas=replicas)
        state.set_switch(await switch.state() is not None)

    if not await patiently(read, stop) or switch is None:
        return None
    return switch, state


def row_reader(catalog: Catalog, batch: int) -> Callable[[int], Awaitable[Row | None]]:
    """Rows read in the same event-loop turn share one `fetch_rows` (`id=in.(...)`); 1 = one by one."""
    if batch <= 1:
        return catalog.get_row

    async def rows_by_id(ids: Sequence[int]) -> dict[int, Row]:
        return {row.id: row for row in await catalog.fetch_rows(ids)}

    return Batcher(each_on_failure(rows_by_id, catalog.get_row), batch).load


def row_merger(catalog: Catalog, batch: int) -> Callable[[int, MetaPatch], Awaitable[Row | None]]:
    """Merges submitted in the same event-loop turn share one `merge_many`; 1 = one by one."""
    if batch <= 1:
        return catalog.merge_meta
    return WriteBatcher(catalog.merge_many, batch).submit


async def build_consumer(
    settings: SettingsBundle,
    args: argparse.Namespace,
    js: JetStreamContext,
    catalog: Catalog,
    http: HttpClient,
    publisher: AckPublisher,
    metrics: Metrics,
    worker_id: str,
    ledger: Ledger,
    pause: PauseState,
    layout: Layout,
) -> Consumer:
    nats_cfg, worker_cfg = settings.get(NatsSettings), settings.get(WorkerSettings)
    observe = metrics.observe_upstream
    pace: Pace = NoPace()
    if worker_cfg.pace_per_minute > 0:
        pace = await GlobalPace.open(
            js,
            worker_cfg.pace_bucket,
            PaceConfig(worker_cfg.pace_per_minute, worker_cfg.pace_burst),
            replicas=nats_cfg.replicas,
        )
    batch = worker_cfg.lookup_batch
    processor = RowProcessor(
        catalog,
        build_enricher(settings, http, observe, batch=batch, refused=metrics.thumbnail_bucket_refused.inc),
        build_agent_zero(settings, http, observe),
        links_from(settings.get(JellyfinSettings)),
        policy_from(settings, layout),
        pace=pace,
        read_row=row_reader(catalog, batch),
        merge=row_merger(catalog, batch),
        ledger=ledger,
    )
    version = settings.get(BackfillSettings).version
    settler = Settler(publisher, layout.prefix, layout.stream, worker_id, version, metrics)
    concurrency = args.concurrency or worker_cfg.concurrency
    return Consumer(
        js,
        layout,
        processor,
        settler,
        metrics,
        policy_from(settings, layout),
        concurrency=concurrency,
        fetch_batch=min(args.fetch_batch or worker_cfg.fetch_batch, concurrency),
        fetch_timeout=worker_cfg.fetch_timeout,
        ack_wait=layout.consumer.ack_wait or nats_cfg.ack_wait,
        pace=pace,
        ledger=ledger,
        pause=pause,
    )


async def run(settings: SettingsBundle, args: argparse.Namespace) -> int:
    nats_cfg, worker_cfg = settings.get(NatsSettings), settings.get(WorkerSettings)
    worker_id = worker_cfg.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    registry = CollectorRegistry()
    metrics = Metrics(registry, settings.get(BackfillSettings).version)
    layout = layout_from(settings)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopped_by, sig, stop)
    concurrency = args.concurrency or worker_cfg.concurrency
    async with contextlib.AsyncExitStack() as resources:
        http = make_client(
            settings.get(BackfillSettings).http_timeout, max_connections=max(concurrency * 2, 16)
        )
        resources.push_async_callback(http.aclose)
        nc = await unless_stopped(
            connect(nats_cfg.url, f"backfill-worker {worker_id}", reconnect_forever=True), stop
        )
        if nc is None:  # stopped while NATS was still out of reach
            log.info("stopped before NATS answered")
            return 0
        resources.push_async_callback(nc.drain)
        js = nc.jetstream(timeout=10)
        in_force = await ensure_layout_patiently(js, layout, stop)
        if in_force is None:
            return 0
        layout = in_force
        catalog = await resources.enter_async_context(open_catalog(settings, http, metrics.observe_upstream))
        publisher = AckPublisher(nc)
        await publisher.start()
        resources.push_async_callback(publisher.close)
        ledger = await Ledger.open(
            js, worker_cfg.ledger_bucket, worker_cfg.retry_budget_seconds, replicas=nats_cfg.replicas
        )
        pausing = await pause_state_patiently(js, nats_cfg.control_bucket, layout, nats_cfg.replicas, stop)
        if pausing is None:
            return 0
        switch, pause = pausing
        metrics.paused.set_function(lambda: int(pause.paused))
        consumer = await build_consumer(
            settings, args, js, catalog, http, publisher, metrics, worker_id, ledger, pause, layout
        )

        def ready() -> tuple[bool, str]:
            if not nc.is_connected:
                return False, "not connected to NATS"
            return (True, "bound") if consumer.bound else (False, "not bound to the consumer")

        port = worker_cfg.metrics_port if args.metrics_port is None else args.metrics_port
        runner, bound = await start_health_server(health_app(registry, ready), worker_cfg.metrics_host, port)
        resources.push_async_callback(runner.cleanup)
        with contextlib.suppress(NatsError, TimeoutError):  # the periodic refresh below retries
            await refresh_once(js, layout, metrics, pause)
        sweeper = Sweeper(
            nc,
            js,
            layout,
            publisher,
            metrics,
            worker_id,
            settings.get(BackfillSettings).version,
            ledger,
            ack_wait=layout.consumer.ack_wait or nats_cfg.ack_wait,
            max_deliver=layout.consumer.max_deliver or nats_cfg.max_deliver,
            grace=SWEEP_GRACE,
        )
        await sweeper.listen()
        background = [
            asyncio.create_task(refresh_forever(js, layout, metrics, worker_cfg.stats_interval, pause)),
            asyncio.create_task(watch_switch(switch, pause)),
            asyncio.create_task(sweeper.scan_forever(worker_cfg.sweep_interval)),
        ]
        if args.exit_when_idle is not None:
            background.append(asyncio.create_task(watch_idle(js, layout, args.exit_when_idle, stop)))
        resources.callback(lambda: [task.cancel() for task in background])
        log.info(
            "worker started",
            extra={
                "worker": worker_id,
                "concurrency": concurrency,
                "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                "metrics_port": bound,
                "stream": layout.stream,
                "consumer": layout.durable,
            },
        )
        await consumer.run(stop, args.grace if args.grace is not None else worker_cfg.grace_seconds)
    log.info("worker stopped", extra={"worker": worker_id})
    return 0


def stopped_by(sig: signal.Signals, stop: asyncio.Event) -> None:
    """SIGTERM: a normal stop (exit 0, as orchestrators expect); SIGINT: the same drain, exit 130."""
    STOP_SIGNALS.append(sig)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the event loop took the signal over
        print("worker: interrupted", file=sys.stderr)
        return int(Exit.INTERRUPTED)
    return int(Exit.INTERRUPTED) if code == 0 and signal.SIGINT in STOP_SIGNALS[:1] else code


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(GROUPS)
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.get(BackfillSettings).log_format)
    try:
        runner = event_loop_runner(settings.get(WorkerSettings).event_loop)
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    try:
        return runner(run(settings, args))
    except BackfillError as exc:
        log.error("worker cannot run: %s", exc)  # noqa: TRY400 - the message is the whole story
        return int(Exit.UNAVAILABLE)


if __name__ == "__main__":
    sys.exit(main())
