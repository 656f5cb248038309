"""`producer pause | resume | status`: run control for every worker at once, and where the run stands."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import ServerVersion
from nats.js import JetStreamContext
from nats.js.errors import APIError

from backfill.adapters import layout_from, open_catalog
from backfill.bus import connect
from backfill.errors import BusError
from backfill.layout import Layout, ensure_layout
from backfill.settings import BackfillSettings, CatalogSettings, NatsSettings, SettingsBundle
from backfill.transport import make_client
from backfill.wire import dlq_filter

PAUSE_YEARS = 100  # "until resumed": JetStream pauses until a timestamp
PAUSE_SINCE = (2, 11)  # consumer pause came with nats-server 2.11; 2.10 leaves the request unanswered
CONSUMER_NOT_FOUND = 10014  # JetStream API error codes
STREAM_NOT_FOUND = 10059


def add_control_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    commands.add_parser("pause", help="stop every worker from receiving messages (nats-server 2.11+)")
    commands.add_parser("resume", help="let the workers receive messages again")
    status = commands.add_parser(
        "status", help="backlog, in flight, redeliveries, dead letters, rows enriched/missing, rate, ETA"
    )
    status.add_argument("--json", action="store_true")
    status.add_argument("--sample", type=float, default=2.0, help="seconds to measure the current rate over")


@dataclass
class Status:
    backlog: int
    in_flight: int
    redelivered: int
    paused: bool
    dead_letters: dict[str, int] = field(default_factory=dict)
    rows_enriched: int | None = None  # published rows that carry a Jellyfin public URL
    rows_missing: int | None = None  # published rows still without one (the candidates)
    rate_per_second: float | None = None
    eta_seconds: float | None = None


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
    return "\n".join(["paused" if status.paused else "running"] + [f"{k:<31}{v}" for k, v in lines])


async def run_control(settings: SettingsBundle, args: argparse.Namespace) -> int:
    layout = layout_from(settings)
    nc = await connect(
        settings.get(NatsSettings).url, f"backfill-producer {args.command}", reconnect_forever=False
    )
    try:
        js = nc.jetstream(timeout=10)
        if args.command != "status":
            unsupported = pause_unsupported(args.command, nc.connected_server_version)
            if unsupported is not None:
                print(unsupported)
                return 1
        await ensure_layout(js, layout)
        if args.command == "status":
            return await _status(settings, js, layout, args)
        return await pause_or_resume(js, layout, args.command)
    except TimeoutError as exc:
        raise BusError(f"JetStream did not answer: {exc}") from exc
    finally:
        await nc.drain()


def pause_unsupported(command: str, server: ServerVersion) -> str | None:
    """The message for a server too old to pause consumers (it ignores the request: no answer at all);
    None when it can, or when its version is unknown."""
    if server.major == 0 or (server.major, server.minor) >= PAUSE_SINCE:
        return None
    version = f"{server.major}.{server.minor}.{server.patch}"
    instead = (
        "scale the workers to zero instead, and back up to resume"
        if command == "pause"
        else "nothing can be paused there; if the workers were scaled to zero, scale them back up"
    )
    return (
        f"{command} failed: nats-server {version} cannot pause consumers "
        f"(needs {PAUSE_SINCE[0]}.{PAUSE_SINCE[1]} or later); {instead}."
    )


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


async def pause_or_resume(js: JetStreamContext, layout: Layout, command: str) -> int:
    try:
        if command == "pause":
            until = (datetime.now(UTC) + timedelta(days=365 * PAUSE_YEARS)).strftime("%Y-%m-%dT%H:%M:%SZ")
            await js.pause_consumer(layout.stream, layout.durable, until)
        else:
            await js.resume_consumer(layout.stream, layout.durable)
    except APIError as exc:
        print(pause_refused(command, layout, exc))
        return 1
    state = "paused: workers receive nothing until resume" if command == "pause" else "resumed"
    print(f"{layout.durable} {state}")
    return 0


async def _status(
    settings: SettingsBundle, js: JetStreamContext, layout: Layout, args: argparse.Namespace
) -> int:
    status = await measure(js, layout, args.sample)
    http = make_client(settings.get(BackfillSettings).http_timeout)
    try:
        async with open_catalog(settings, http) as catalog:
            status.rows_enriched = await catalog.count_enriched()
            status.rows_missing = await catalog.count_candidates()
    finally:
        await http.aclose()
    data: dict[str, Any] = asdict(status)
    print(json.dumps(data) if args.json else render(status))
    return 0


CONTROL_GROUPS: dict[str, list[type[Any]]] = {
    "pause": [NatsSettings, BackfillSettings],
    "resume": [NatsSettings, BackfillSettings],
    "status": [NatsSettings, CatalogSettings, BackfillSettings],
}
