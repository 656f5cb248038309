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

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from backfill.adapters import build_agent_zero, build_catalog, build_enricher, layout_from, links_from
from backfill.bus import AckPublisher, connect
from backfill.errors import BackfillError, ConfigError
from backfill.layout import Layout, ensure_layout
from backfill.logs import setup_logging
from backfill.metrics import Metrics
from backfill.outcome import RetryPolicy
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
    load_settings,
)
from backfill.transport import make_client
from worker.consumer import Consumer
from worker.health import health_app, start_health_server
from worker.settle import Settler
from worker.stats import refresh_forever, refresh_once

log = logging.getLogger("worker")
GROUPS = (
    NatsSettings,
    CatalogSettings,
    JellyfinSettings,
    AgentZeroSettings,
    StorageSettings,
    BackfillSettings,
    WorkerSettings,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="worker", description=__doc__)
    parser.add_argument(
        "--concurrency", type=int, help="messages handled at once (env WORKER_CONCURRENCY, 16)"
    )
    parser.add_argument("--fetch-batch", type=int, help="most messages per fetch (env WORKER_FETCH_BATCH)")
    parser.add_argument("--metrics-port", type=int, help="port for /metrics, /healthz, /readyz (0 = any)")
    parser.add_argument("--grace", type=float, help="seconds to finish in-flight work on SIGTERM (25)")
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit 0 once the consumer has had nothing pending or in flight for SECONDS (one-shot runs)",
    )
    return parser.parse_args(argv)


def policy_from(settings: SettingsBundle) -> RetryPolicy:
    worker = settings.get(WorkerSettings)
    return RetryPolicy(
        base_delay=worker.retry_base_delay,
        max_delay=worker.retry_max_delay,
        max_attempts=settings.get(NatsSettings).max_deliver,
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


async def run(settings: SettingsBundle, args: argparse.Namespace) -> int:
    nats_cfg, worker_cfg = settings.get(NatsSettings), settings.get(WorkerSettings)
    backfill_cfg = settings.get(BackfillSettings)
    worker_id = worker_cfg.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    concurrency = args.concurrency or worker_cfg.concurrency
    registry = CollectorRegistry()
    metrics = Metrics(registry, backfill_cfg.version)
    layout = layout_from(settings)
    http = make_client(backfill_cfg.http_timeout, max_connections=max(concurrency * 2, 16))
    nc = await connect(nats_cfg.url, f"backfill-worker {worker_id}", reconnect_forever=True)
    js = nc.jetstream(timeout=10)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    background: list[asyncio.Task[None]] = []
    runner = None
    try:
        await ensure_layout(js, layout)
        publisher = AckPublisher(nc)
        await publisher.start()
        processor = RowProcessor(
            build_catalog(settings, http, metrics.observe_upstream),
            build_enricher(settings, http, metrics.observe_upstream),
            build_agent_zero(settings, http, metrics.observe_upstream),
            links_from(settings.get(JellyfinSettings)),
            policy_from(settings),
        )
        settler = Settler(publisher, layout.prefix, layout.stream, worker_id, backfill_cfg.version, metrics)
        consumer = Consumer(
            js,
            layout,
            processor,
            settler,
            metrics,
            policy_from(settings),
            concurrency=concurrency,
            fetch_batch=min(args.fetch_batch or worker_cfg.fetch_batch, concurrency),
            fetch_timeout=worker_cfg.fetch_timeout,
            ack_wait=nats_cfg.ack_wait,
        )

        def ready() -> tuple[bool, str]:
            if not nc.is_connected:
                return False, "not connected to NATS"
            return (True, "bound") if consumer.bound else (False, "not bound to the consumer")

        app = health_app(registry, ready)
        port = worker_cfg.metrics_port if args.metrics_port is None else args.metrics_port
        runner, bound = await start_health_server(app, worker_cfg.metrics_host, port)
        await refresh_once(js, layout, metrics)
        background.append(
            asyncio.create_task(refresh_forever(js, layout, metrics, worker_cfg.stats_interval))
        )
        if args.exit_when_idle is not None:
            background.append(asyncio.create_task(watch_idle(js, layout, args.exit_when_idle, stop)))
        log.info(
            "worker started",
            extra={
                "worker": worker_id,
                "concurrency": concurrency,
                "metrics_port": bound,
                "stream": layout.stream,
                "consumer": layout.durable,
            },
        )
        await consumer.run(stop, args.grace if args.grace is not None else worker_cfg.grace_seconds)
        await publisher.close()
    finally:
        for task in background:
            task.cancel()
        with contextlib.suppress(Exception):
            await nc.drain()
        await http.aclose()
        if runner is not None:
            await runner.cleanup()
    log.info("worker stopped", extra={"worker": worker_id})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(GROUPS)
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.get(BackfillSettings).log_format)
    try:
        return asyncio.run(run(settings, args))
    except BackfillError as exc:
        log.error("worker cannot run: %s", exc)  # noqa: TRY400 - the message is the whole story
        return 3


if __name__ == "__main__":
    sys.exit(main())
