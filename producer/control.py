"""`producer pause | resume | status`: run control for every worker at once, and where the run stands."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from backfill.adapters.jetstream.bus import JetStream
from backfill.adapters.jetstream.control import ConsumerControl, memory_streams, server_pauses_consumers
from backfill.adapters.jetstream.deadletters import dead_letter_counts
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.pausing import PauseSwitch
from backfill.core.errors import ConfigError, NotFound, UpstreamError
from backfill.core.ports import RunMetrics
from backfill.settings import (
    BackfillSettings,
    CatalogSettings,
    NatsSettings,
    SettingsBundle,
    load_settings,
    variables,
)
from backfill.wiring import build_pushgateway, connect_bus, http_client, layout_from, open_catalog
from producer.shell import add_json, emit, warn

CATALOG_VARIABLES = variables(CatalogSettings, "rest_url", "dsn")  # the variables that name a catalog


def add_control_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pushgateway = (
        "also push backfill_paused to this Prometheus Pushgateway, so the alerts see the pause with no "
        "worker up (default: BACKFILL_PUSHGATEWAY_URL)"
    )
    pause = commands.add_parser(
        "pause", help="stop every worker from taking new messages, on any nats-server"
    )
    pause.add_argument("--pushgateway", metavar="URL", help=pushgateway)
    add_json(pause, "what was done")
    resume = commands.add_parser("resume", help="let the workers take messages again")
    resume.add_argument("--pushgateway", metavar="URL", help=pushgateway)
    add_json(resume, "what was done")
    status = commands.add_parser(
        "status",
        help="backlog, in flight, redeliveries, dead letters, rows enriched/missing, rate, ETA (read-only)",
    )
    add_json(status, "the status")
    status.add_argument(
        "--sample", type=float, default=2.0, help="seconds to measure the current rate over (0: no rate)"
    )


@dataclass
class Status:
    backlog: int
    in_flight: int
    redelivered: int
    paused: bool
    dead_letters: dict[str, int] = field(default_factory=dict)
    rows_enriched: int | None = None  # published rows that carry a Jellyfin public URL
    rows_missing: int | None = None  # published rows still without one (the candidates); None: unknown
    rows_youtube_gap: int | None = None  # rows backfilled without the YouTube links asked for
    rate_per_second: float | None = None
    eta_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)


async def measure(js: JetStream, layout: Layout, sample: float) -> Status:
    """Where the run stands, the rate measured over `sample` seconds; NotFound when the stream or the
    consumer is missing."""
    consumer = ConsumerControl(js, layout, "status")
    first = await consumer.backlog()
    await asyncio.sleep(sample)  # the rate is the drop of the remaining work over this window
    later = await consumer.backlog()
    remaining = later.pending + later.ack_pending
    rate = max((first.pending + first.ack_pending) - remaining, 0) / sample if sample > 0 else None
    eta = remaining / rate if rate else None
    return Status(
        later.pending,
        later.ack_pending,
        later.redelivered,
        later.paused,
        await dead_letter_counts(js, layout),
        rate_per_second=rate,
        eta_seconds=eta,
    )


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def render(status: Status) -> str:
    eta = str(timedelta(seconds=round(status.eta_seconds))) if status.eta_seconds is not None else "-"
    rate = f"{status.rate_per_second:.1f}/s" if status.rate_per_second is not None else "-"
    dead = ", ".join(f"{k}={v}" for k, v in status.dead_letters.items()) or "0"
    rows = f"{_count(status.rows_enriched)} / {_count(status.rows_missing)}"
    lines = [
        ("backlog (not yet delivered)", str(status.backlog)),
        ("in flight (ack pending)", str(status.in_flight)),
        ("redelivered, unacknowledged", str(status.redelivered)),
        ("rows enriched / still missing", rows),
        ("current rate", rate),
        ("ETA", eta),
        ("dead letters", dead),
    ]
    if status.rows_youtube_gap:  # rows backfilled without the YouTube links asked for (PMOVES.yt gave up)
        lines.insert(4, ("rows with a YouTube link gap", str(status.rows_youtube_gap)))
    rendered = ["paused" if status.paused else "running"] + [f"{k:<31}{v}" for k, v in lines]
    return "\n".join(rendered)  # the warnings go to stderr


async def run_control(settings: SettingsBundle, args: argparse.Namespace) -> int:
    layout = layout_from(settings)
    nats_cfg = settings.get(NatsSettings)
    bus = await connect_bus(settings, f"backfill-producer {args.command}")
    try:  # reads and pauses only: the layout is set up by enqueue and workers
        if args.command == "status":
            return await _status(settings, bus.js, layout, args)
        switch = await PauseSwitch.open(bus.js, nats_cfg.control_bucket, layout, replicas=nats_cfg.replicas)
        server_pauses = server_pauses_consumers(bus)
        code = await pause_or_resume(bus.js, layout, switch, args, server_pauses=server_pauses)
    finally:
        await bus.drain()
    pushgateway = build_pushgateway(settings, args.pushgateway)
    if code == 0 and pushgateway is not None:
        await push_paused_or_warn(pushgateway, args.command == "pause")
    return code


async def pause_or_resume(
    js: JetStream,
    layout: Layout,
    switch: PauseSwitch,
    args: argparse.Namespace,
    *,
    server_pauses: bool,
) -> int:
    """Pause: the switch every worker honours, then (2.11+) the consumer itself; resume: both back.
    A missing stream or consumer is NotFound, and nothing is changed."""
    command = args.command
    consumer = ConsumerControl(js, layout, command)
    await consumer.require()
    if command == "pause":
        await switch.pause(by=f"producer on {socket.gethostname()}")
        if server_pauses:
            await consumer.pause()
    else:
        if server_pauses:
            await consumer.resume()
        await switch.resume()
    if command == "resume":
        text = f"{layout.durable} resumed"
    elif server_pauses:
        text = f"{layout.durable} paused: workers receive nothing until resume"
    else:
        text = (
            f"{layout.durable} paused: workers fetch nothing new until resume (this nats-server cannot "
            "pause a consumer itself; every worker reads the pause switch within a second)"
        )
    data = {
        "consumer": layout.durable,
        "stream": layout.stream,
        "paused": command == "pause",
        "switch": True,
        "server_pause": server_pauses,
    }
    emit(args, data, text)
    return 0


async def push_paused_or_warn(pushgateway: RunMetrics, paused: bool) -> None:
    """`backfill_paused` on the Pushgateway keeps a deliberate pause visible with no worker running
    (the alerts read it). The pause itself is done: a failed push only warns."""
    try:
        await pushgateway.push_paused(paused)
    except UpstreamError as exc:
        warn("producer", f"the pause state was not pushed to the Pushgateway: {exc}")


async def storage_warnings(js: JetStream, layout: Layout) -> list[str]:
    """Streams kept in memory lose the backlog and the dead letters when nats-server restarts."""
    return [
        f"stream {name} is kept in memory: a nats-server restart loses every message in it "
        "(give JetStream file storage on a volume: deploy/README.md)"
        for name in await memory_streams(js, layout)
    ]


async def _status(settings: SettingsBundle, js: JetStream, layout: Layout, args: argparse.Namespace) -> int:
    try:
        status = await measure(js, layout, args.sample)
    except NotFound as exc:
        hint = "Nothing was enqueued yet, or this shell's settings name another layout."
        raise NotFound(f"{exc} {hint}") from exc
    switch = await PauseSwitch.existing(js, settings.get(NatsSettings).control_bucket, layout)
    status.paused = status.paused or (switch is not None and await switch.state() is not None)
    status.warnings.extend(await storage_warnings(js, layout))
    await count_rows(settings, status)
    for warning in status.warnings:
        warn("producer", warning)
    data: dict[str, Any] = asdict(status)
    emit(args, data, render(status))
    return 0


async def count_rows(settings: SettingsBundle, status: Status) -> None:
    """Rows enriched / missing when the catalog is configured and answers; the queue shows either way."""
    try:
        catalog_settings = load_settings([CatalogSettings])
    except ConfigError:
        if not catalog_configured():
            status.warnings.append(
                "row counts need the catalog: set SUPA_REST_URL and SUPABASE_SERVICE_ROLE_KEY, or CATALOG_DSN"
            )
            return
        raise
    http = http_client(settings)
    try:
        both = SettingsBundle([catalog_settings.get(CatalogSettings), settings.get(BackfillSettings)])
        async with open_catalog(both, http) as catalog:
            status.rows_enriched = await catalog.count_enriched()
            status.rows_missing = await catalog.count_candidates()
            status.rows_youtube_gap = await catalog.count_youtube_gaps()
    except UpstreamError as exc:
        status.warnings.append(f"row counts unavailable: {exc}")
    finally:
        await http.aclose()


def catalog_configured() -> bool:
    """Whether any variable naming a catalog is set (then a problem with it is an error, not a gap)."""
    return any(os.environ.get(name) for name in CATALOG_VARIABLES)


CONTROL_GROUPS: dict[str, list[type[Any]]] = {
    "pause": [NatsSettings, BackfillSettings],
    "resume": [NatsSettings, BackfillSettings],
    "status": [NatsSettings, BackfillSettings],  # the catalog is optional: see count_rows
}
