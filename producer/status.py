"""Where a run stands, for `producer status`: the consumer's backlog and rate, the dead letters, the
pause, the streams kept in memory, and the rows enriched and still missing when a catalog is set."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import timedelta

from backfill.adapters.jetstream.bus import JetStream
from backfill.adapters.jetstream.control import ConsumerControl, memory_streams
from backfill.adapters.jetstream.deadletters import dead_letter_counts
from backfill.adapters.jetstream.layout import Layout
from backfill.core.errors import ConfigError, UpstreamError
from backfill.settings import BackfillSettings, CatalogSettings, SettingsBundle, load_settings, variables
from backfill.wiring import http_client, open_catalog

CATALOG_VARIABLES = variables(CatalogSettings, "rest_url", "dsn")  # the variables that name a catalog


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
