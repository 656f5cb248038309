"""`producer watch`: a backfill that keeps itself done. Every BACKFILL_WATCH_INTERVAL it enqueues the rows
that became candidates (new rows by keyset above a high-water mark kept in JetStream, a full pass every
BACKFILL_WATCH_FULL_EVERY), never a row that already has a dead letter, and replays the
`jellyfin_not_found` dead letters Jellyfin's library may now resolve (`producer.watch`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
from typing import Any

import msgspec

from backfill.adapters.jetstream.bus import AckPublisher, Bus
from backfill.adapters.jetstream.layout import ensure_layout
from backfill.adapters.jetstream.watchstate import Lease, WatchState
from backfill.adapters.transport import HttpClient
from backfill.core.deadletter import DeadLetterIndex
from backfill.core.errors import ConfigError, Exit
from backfill.core.ports import MediaLibrary
from backfill.core.watch import PassRecord, ReplayPolicy
from backfill.core.wire import Mode
from backfill.health import health_app, start_health_server
from backfill.settings import (
    BackfillSettings,
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    SettingsBundle,
    WatchSettings,
    load_settings,
    variables,
)
from backfill.watch_metrics import WatchMetrics
from backfill.wiring import (
    WORKER_FIRST_CONNECT,
    build_jellyfin,
    connect_bus,
    http_client,
    layout_from,
    open_catalog,
)
from producer.enqueue import add_mode_option
from producer.runs import new_run_id
from producer.shell import Command, Interrupt, add_json, emit, needs, warn
from producer.watch import Watcher
from producer.watch_pass import PassOptions, PassTools
from producer.youtube_linking import add_youtube_options, linking_from

log = logging.getLogger("producer")
JELLYFIN_VARIABLES = variables(JellyfinSettings, "url", "api_key", "user_id")


def watch_arguments(parser: argparse.ArgumentParser) -> None:
    add_mode_option(parser)
    add_youtube_options(parser)
    parser.add_argument(
        "--once",
        action="store_true",
        help="one pass now, then exit (exit 1 when another watcher holds the lease)",
    )
    parser.add_argument("--full", action="store_true", help="make the first pass a full pass")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="port for /metrics, /healthz, /readyz (0: any; default BACKFILL_WATCH_METRICS_PORT, 9109); "
        "none with --once",
    )
    add_json(parser, "with --once, the pass's record")


def jellyfin_settings() -> SettingsBundle | None:
    """Jellyfin's settings, to ask it what changed; None (replays by backoff only) when it is not
    configured at all. Half a configuration is a ConfigError, raised before anything connects."""
    try:
        return load_settings([JellyfinSettings])
    except ConfigError:
        if any(os.environ.get(name) for name in JELLYFIN_VARIABLES):
            raise
        warn(
            "producer",
            "Jellyfin is not configured (JELLYFIN_URL, JELLYFIN_API_KEY, JELLYFIN_USER_ID): dead letters "
            "of items not found are replayed by backoff instead of when Jellyfin's library changes",
        )
        return None


def media_library(jellyfin: SettingsBundle | None, http: HttpClient) -> MediaLibrary | None:
    return None if jellyfin is None else build_jellyfin(jellyfin, http)


def holder_id(watch: WatchSettings) -> str:
    return watch.watcher_id or f"{socket.gethostname()}-{os.getpid()}"


async def run_watch(settings: SettingsBundle, args: argparse.Namespace) -> int:
    watch, nats_cfg = settings.get(WatchSettings), settings.get(NatsSettings)
    jellyfin = jellyfin_settings()
    holder = holder_id(watch)
    interrupt: Interrupt = args.interrupt
    interrupt.graceful = True  # a pass stops between steps; the lease is given back
    http = http_client(settings)
    first = nats_cfg.connect_timeout or WORKER_FIRST_CONNECT
    bus = await connect_bus(settings, f"backfill-watch {holder}", reconnect_forever=True, first_connect=first)
    async with contextlib.AsyncExitStack() as resources:
        resources.push_async_callback(http.aclose)
        resources.push_async_callback(bus.drain)
        layout = await ensure_layout(bus.js, layout_from(settings))
        metrics = WatchMetrics()
        if not args.once:
            await serve_health(resources, metrics, bus, watch, args, holder)
        publisher = AckPublisher(bus.nc)
        resources.push_async_callback(publisher.close)
        catalog = await resources.enter_async_context(open_catalog(settings, http))
        tools = PassTools(
            bus.js,
            layout,
            publisher,
            catalog,
            media_library(jellyfin, http),
            await WatchState.open(bus.js, watch.bucket, layout, replicas=nats_cfg.replicas),
            DeadLetterIndex(),
            ReplayPolicy(watch.max_replays, watch.replay_backoff, watch.replay_backoff_max),
        )
        lease = await Lease.open(
            bus.js, watch.lease_bucket, layout, watch.lease_seconds, replicas=nats_cfg.replicas
        )
        watcher = Watcher(tools, pass_options(settings, args, holder), lease, metrics, interrupt)
        record = await watcher.run(once=args.once, full=args.full, wait_for_lease=not args.once)
    return report(args, interrupt, record, ran=watcher.last_tally is not None)


def pass_options(settings: SettingsBundle, args: argparse.Namespace, holder: str) -> PassOptions:
    watch = settings.get(WatchSettings)
    return PassOptions(
        mode=Mode(args.mode),
        version=settings.get(BackfillSettings).version,
        run_id=f"watch-{new_run_id().removeprefix('run-')}",
        youtube=linking_from(args),
        full_every=watch.full_every,
        interval=watch.interval,
        holder=holder,
    )


async def serve_health(
    resources: contextlib.AsyncExitStack,
    metrics: WatchMetrics,
    bus: Bus,
    watch: WatchSettings,
    args: argparse.Namespace,
    holder: str,
) -> None:
    """`/metrics`, `/healthz` and `/readyz` (connected to NATS) until the watcher stops."""

    def ready() -> tuple[bool, str]:
        return (True, "connected") if bus.connected else (False, "not connected to NATS")

    port = watch.metrics_port if args.metrics_port is None else args.metrics_port
    runner, bound = await start_health_server(health_app(metrics.registry, ready), watch.metrics_host, port)
    resources.push_async_callback(runner.cleanup)
    log.info("watcher started", extra={"holder": holder, "metrics_port": bound})


def report(args: argparse.Namespace, interrupt: Interrupt, record: PassRecord | None, ran: bool) -> int:
    """`--once`: the pass (or why none ran); a stopped watcher: 0 on SIGTERM (a service), 130 on SIGINT."""
    if args.once:
        if not ran:
            warn("producer", "no pass: another watcher holds the lease (see `producer status`)")
            return int(Exit.FAILED)
        assert record is not None
        data: dict[str, Any] = msgspec.to_builtins(record)
        emit(args, data, pass_text(record))
    if interrupt.signal == signal.SIGINT:
        return int(Exit.INTERRUPTED)
    return int(Exit.OK)


def pass_text(record: PassRecord) -> str:
    enqueued = ", ".join(f"{k}={v}" for k, v in record.enqueued.items())
    left_out = ", ".join(f"{k}={v}" for k, v in record.left_out.items()) or "0"
    replayed = ", ".join(f"{k}={v}" for k, v in record.replayed.items()) or "0"
    waiting = ", ".join(f"{k}={v}" for k, v in record.waiting.items()) or "0"
    state = "interrupted" if record.interrupted else ("full pass" if record.full else "pass")
    return (
        f"{state}: enqueued {enqueued}; left out (dead letters) {left_out}; replayed {replayed}; "
        f"waiting for an operator {waiting}; high-water mark {record.high_water}"
    )


WATCH = Command(
    watch_arguments,
    run_watch,
    needs(NatsSettings, CatalogSettings, BackfillSettings, WatchSettings),
    {
        "watch": """
producer watch                                   # runs until stopped; /metrics on :9109
producer watch --mode metadata-only --metrics-port 0
producer watch --once --json | jq .enqueued      # one pass (when the lease is free), then exit
"""
    },
)
