"""Where a run stands, for `producer status`: the consumer's backlog and rate, the dead letters, the
pause, the streams kept in memory, the rows enriched and still missing when a catalog is set, and the
watcher (`producer watch`) when one ever ran: who holds its lease, its last and next pass, and the rows
in the dead letters that wait for an operator."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from backfill.adapters.jetstream.bus import JetStream
from backfill.adapters.jetstream.control import ConsumerControl, memory_streams
from backfill.adapters.jetstream.deadletters import dead_letter_counts
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.watchstate import Lease, WatchState
from backfill.core.errors import ConfigError, UpstreamError
from backfill.settings import (
    BackfillSettings,
    CatalogSettings,
    SettingsBundle,
    WatchSettings,
    load_settings,
    variables,
)
from backfill.wiring import http_client, open_catalog

CATALOG_VARIABLES = variables(CatalogSettings, "rest_url", "dsn")  # the variables that name a catalog


@dataclass
class WatcherStatus:
    """`producer watch` as JetStream remembers it (Unix times)."""

    holder: str | None  # who holds the lease now; None: no watcher is running
    holder_since: float | None
    last_pass_at: float | None  # when the last pass ended (completed or interrupted)
    last_completed_at: float | None
    next_pass_at: float | None
    last_pass_interrupted: bool
    high_water: int
    waiting_for_operator: dict[str, int] = field(default_factory=dict)  # rows, by dead-letter reason


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
    watcher: WatcherStatus | None = None  # None: no watcher ever ran on this layout
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


async def watcher_status(js: JetStream, layout: Layout, watch: WatchSettings) -> WatcherStatus | None:
    """The watcher's lease and last pass, when a watcher ever ran (reads two keys; creates nothing)."""
    state = await WatchState.existing(js, watch.bucket, layout)
    record = await state.last_pass() if state is not None else None
    lease = await Lease.existing(js, watch.lease_bucket, layout)
    held = await lease.holder() if lease is not None else None
    if record is None and held is None:
        return None
    return WatcherStatus(
        holder=held.holder if held else None,
        holder_since=held.since if held else None,
        last_pass_at=record.finished_at if record else None,
        last_completed_at=(record.completed_at or None) if record else None,
        next_pass_at=record.next_at if record and held else None,
        last_pass_interrupted=bool(record and record.interrupted),
        high_water=record.high_water if record else 0,
        waiting_for_operator=dict(record.waiting) if record else {},
    )


def _moment(at: float | None, now: float) -> str:
    """`2026-03-01T12:00:00Z (42 s ago)` / `(in 42 s)`, or `-`."""
    if at is None:
        return "-"
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    delta = round(at - now)
    return f"{stamp} ({'in ' if delta > 0 else ''}{abs(delta)} s{'' if delta > 0 else ' ago'})"


def render_watcher(watcher: WatcherStatus | None, now: float | None = None) -> list[tuple[str, str]]:
    if watcher is None:  # no watcher ever ran here: nothing to show
        return []
    now = time.time() if now is None else now
    waiting = ", ".join(f"{k}={v}" for k, v in watcher.waiting_for_operator.items()) or "0"
    last = _moment(watcher.last_pass_at, now) + (" interrupted" if watcher.last_pass_interrupted else "")
    return [
        ("watcher (lease holder)", watcher.holder or "none running"),
        ("watcher last pass", last),
        ("watcher next pass", _moment(watcher.next_pass_at, now)),
        ("waiting for an operator (rows)", waiting),
    ]


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
    lines += render_watcher(status.watcher)
    rendered = ["paused" if status.paused else "running"] + [f"{k:<31}{v}" for k, v in lines]
    return "\n".join(rendered)  # the warnings go to stderr


async def storage_warnings(js: JetStream, layout: Layout) -> list[str]:
    """Streams kept in memory lose the backlog and the dead letters when nats-server restarts."""
    return [
        f"stream {name} is kept in memory: a nats-server restart loses every message in it "
        "(give JetStream file storage on a volume: deploy/README.md)"
        for name in await memory_streams(js, layout)
    ]


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
