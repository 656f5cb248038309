"""`producer pause | resume | status`: run control for every worker at once, and where the run stands."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import ServerVersion
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import APIError

from backfill.adapters.jetstream.bus import connect
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.pausing import PauseSwitch
from backfill.adapters.transport import make_client
from backfill.core.errors import BusError, ConfigError, NotFound, UpstreamError
from backfill.core.wire import dlq_filter
from backfill.settings import (
    BackfillSettings,
    CatalogSettings,
    NatsSettings,
    SettingsBundle,
    load_settings,
)
from backfill.wiring import layout_from, open_catalog
from producer.pushgateway import DEFAULT_JOB, push_paused
from producer.shell import add_json, emit, warn

PAUSE_YEARS = 100  # "until resumed": JetStream pauses until a timestamp
PAUSE_SINCE = (2, 11)  # consumer pause came with nats-server 2.11; 2.10 leaves the request unanswered
CATALOG_VARIABLES = ("SUPA_REST_URL", "SUPABASE_REST_URL", "CATALOG_DSN", "SUPABASE_DB_URL")
CONSUMER_NOT_FOUND = 10014  # JetStream API error codes
STREAM_NOT_FOUND = 10059


def add_control_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pushgateway = "also push backfill_paused to this Prometheus Pushgateway (the alerts read it)"
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


async def dead_letter_counts(js: JetStreamContext, layout: Layout) -> dict[str, int]:
    """Dead letters per reason, from the stream's per-subject counts (no message is read)."""
    info = await js.stream_info(layout.dlq_stream, subjects_filter=dlq_filter(layout.prefix))
    subjects: dict[str, int] = info.state.subjects or {}
    return {subject.rsplit(".", 1)[-1]: count for subject, count in sorted(subjects.items())}


async def _remaining(js: JetStreamContext, layout: Layout) -> tuple[int, int, int, bool]:
    info = await js.consumer_info(layout.stream, layout.durable)
    return (info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0, bool(info.paused))


async def measure(js: JetStreamContext, layout: Layout, sample: float) -> Status:
    pending, in_flight, _, _ = await _remaining(js, layout)
    await asyncio.sleep(sample)  # the rate is the drop of the remaining work over this window
    later = await _remaining(js, layout)
    rate = max((pending + in_flight) - (later[0] + later[1]), 0) / sample if sample > 0 else None
    remaining = later[0] + later[1]
    eta = remaining / rate if rate else None
    return Status(
        later[0],
        later[1],
        later[2],
        later[3],
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
    nc = await connect(nats_cfg.url, f"backfill-producer {args.command}", reconnect_forever=False)
    try:
        js = nc.jetstream(timeout=10)  # reads and pauses only: the layout is set up by enqueue and workers
        if args.command == "status":
            return await _status(settings, js, layout, args)
        switch = await PauseSwitch.open(js, nats_cfg.control_bucket, layout, replicas=nats_cfg.replicas)
        server_pauses = consumer_pause_supported(nc.connected_server_version)
        code = await pause_or_resume(js, layout, switch, args, server_pauses=server_pauses)
    except TimeoutError as exc:
        raise BusError(f"JetStream did not answer: {exc}") from exc
    finally:
        await nc.drain()
    if code == 0 and args.pushgateway:
        await push_paused_or_warn(args.pushgateway, args.command == "pause")
    return code


def consumer_pause_supported(server: ServerVersion) -> bool:
    """Whether the server can pause a consumer itself (2.11+; unknown versions are asked). Older ones
    leave the request unanswered: there, the pause switch alone does it."""
    return server.major == 0 or (server.major, server.minor) >= PAUSE_SINCE


def pause_refused(command: str, layout: Layout, exc: APIError) -> str:
    """What JetStream's refusal of a pause or resume means, in the operator's terms."""
    code = f"JetStream error {exc.err_code}: {exc.description}"
    if exc.err_code == CONSUMER_NOT_FOUND:
        missing = f"consumer {layout.durable!r} not found on stream {layout.stream!r}"
    elif exc.err_code == STREAM_NOT_FOUND:
        missing = f"stream {layout.stream!r} not found"
    else:
        return f"{command} failed: {code}."
    return (
        f"{command} failed: {missing} ({code}). Check BACKFILL_STREAM and BACKFILL_CONSUMER: "
        "they must name the stream and consumer the workers use."
    )


async def pause_or_resume(
    js: JetStreamContext,
    layout: Layout,
    switch: PauseSwitch,
    args: argparse.Namespace,
    *,
    server_pauses: bool,
) -> int:
    """Pause: the switch every worker honours, then (2.11+) the consumer itself; resume: both back.
    A missing stream or consumer is NotFound, and nothing is changed."""
    command = args.command
    try:
        await js.consumer_info(layout.stream, layout.durable)
        if command == "pause":
            await switch.pause(by=f"producer on {socket.gethostname()}")
            if server_pauses:
                until = (datetime.now(UTC) + timedelta(days=365 * PAUSE_YEARS)).strftime("%Y-%m-%dT%H:%M:%SZ")
                await js.pause_consumer(layout.stream, layout.durable, until)
        else:
            if server_pauses:
                await js.resume_consumer(layout.stream, layout.durable)
            await switch.resume()
    except APIError as exc:
        if exc.err_code in (CONSUMER_NOT_FOUND, STREAM_NOT_FOUND):
            raise NotFound(pause_refused(command, layout, exc)) from exc
        raise BusError(pause_refused(command, layout, exc)) from exc
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


async def push_paused_or_warn(url: str, paused: bool) -> None:
    """`backfill_paused` on the Pushgateway keeps a deliberate pause visible with no worker running
    (the alerts read it). The pause itself is done: a failed push only warns."""
    try:
        await push_paused(url, DEFAULT_JOB, paused)
    except UpstreamError as exc:
        warn("producer", f"the pause state was not pushed to the Pushgateway: {exc}")


async def storage_warnings(js: JetStreamContext, layout: Layout) -> list[str]:
    """Streams kept in memory lose the backlog and the dead letters when nats-server restarts."""
    warnings = []
    for name in (layout.stream, layout.dlq_stream):
        info = await js.stream_info(name)
        if info.config.storage == StorageType.MEMORY:
            warnings.append(
                f"stream {name} is kept in memory: a nats-server restart loses every message in it "
                "(give JetStream file storage on a volume: deploy/README.md)"
            )
    return warnings


async def _status(
    settings: SettingsBundle, js: JetStreamContext, layout: Layout, args: argparse.Namespace
) -> int:
    try:
        status = await measure(js, layout, args.sample)
    except APIError as exc:
        if exc.err_code not in (CONSUMER_NOT_FOUND, STREAM_NOT_FOUND):
            raise
        hint = "Nothing was enqueued yet, or this shell's settings name another layout."
        raise NotFound(f"{pause_refused('status', layout, exc)} {hint}") from exc
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
    http = make_client(settings.get(BackfillSettings).http_timeout)
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
