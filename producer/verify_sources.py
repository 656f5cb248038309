"""Where `producer verify` reads the evidence: the Discord channel itself, or publisher-discord's metrics
table; and the run's window both read from. The verdicts are `producer.deliveries`' and the matching
`backfill.core.embeds`'; the Discord API is `backfill.adapters.discord`'s, built by `backfill.wiring`.

The window starts when the run began: the earliest of the run id's time (`run-YYYYMMDDTHHMMSSZ-...`, as
`producer enqueue` names runs) and the moments the rows' events went out (`meta.backfill_published_at`),
less `MARGIN` for clocks that disagree; `--since` sets it instead.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from backfill.core.embeds import SeenEmbed, match_embeds, snowflake_at
from backfill.core.errors import ConfigError
from backfill.core.model import Row
from backfill.core.payload import PUBLISHED_AT_KEY
from backfill.core.ports import Catalog, ChannelReader, MetricsTable
from backfill.settings import DiscordSettings
from producer.deliveries import (
    DISCORD,
    METRICS_TABLE,
    NOT_SEEN,
    Report,
    by_event,
    channel_checks,
    check_row,
    event_id_of,
)
from producer.progress import Progress

log = logging.getLogger("producer")
MARGIN = timedelta(minutes=10)
ID_CHUNK = 1000
_RUN_TIME = re.compile(r"^run-(\d{8}T\d{6}Z)-")


def parse_time(text: str) -> datetime:
    """`--since`: an ISO 8601 time (UTC when it names no zone)."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--since takes an ISO 8601 time, got {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def run_started(run_id: str | None) -> datetime | None:
    """The time in a run id `producer enqueue` made; None for any other id."""
    found = _RUN_TIME.match(run_id or "")
    return datetime.strptime(found[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if found else None


def _published_at(row: Row) -> datetime | None:
    value = row.meta_dict.get(PUBLISHED_AT_KEY)
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def window_start(rows: Sequence[Row], run_id: str | None, since: datetime | None) -> datetime | None:
    """Where the evidence of these rows starts (see the module docstring); None when nothing tells."""
    if since is not None:
        return since
    known = [t for t in [run_started(run_id), *(_published_at(r) for r in rows if event_id_of(r))] if t]
    return min(known) - MARGIN if known else None


def choose_source(args: argparse.Namespace, discord: DiscordSettings) -> str:
    """`--source`, else the channel when the environment can read it, else the metrics table."""
    if args.source is not None:
        return str(args.source)
    return DISCORD if discord.readable else METRICS_TABLE


async def selected_rows(catalog: Catalog, args: argparse.Namespace, report: Report) -> list[Row]:
    """The rows to verify: the run's republished rows, the `--ids` (unknown ids noted), or every
    republished row."""
    if not args.ids:
        return [row async for page in catalog.republished_rows(args.run_id) for row in page]
    rows: list[Row] = []
    for start in range(0, len(args.ids), ID_CHUNK):
        chunk = args.ids[start : start + ID_CHUNK]
        found = sorted(await catalog.fetch_rows(chunk), key=lambda row: row.id)
        report.missing_ids.extend(sorted(set(chunk) - {row.id for row in found}))
        rows += found
    return rows


async def check_metrics(table: MetricsTable, rows: list[Row], start: datetime | None, report: Report) -> bool:
    """Fill `report` from the metrics table; False when the table does not exist."""
    if await table.records([]) is None:
        return False
    for first in range(0, len(rows), ID_CHUNK):
        page = rows[first : first + ID_CHUNK]
        event_ids = sorted({event_id for row in page if (event_id := event_id_of(row)) is not None})
        records = await table.records(event_ids) if event_ids else []
        if records is None:
            return False
        grouped = by_event(records)
        report.checks.extend(check_row(row, grouped) for row in page)
    report.window_start = start.isoformat() if start else None
    if start is not None and any(check.delivery == NOT_SEEN for check in report.checks):
        report.recording = await table.recorded_since(start)
    return True


async def find_channel(settings: DiscordSettings, api: ChannelReader) -> str:
    """DISCORD_CHANNEL_ID, else the channel of the webhook in DISCORD_WEBHOOK_URL."""
    if not settings.readable:
        raise ConfigError(
            "--source discord needs DISCORD_BOT_TOKEN (a bot that can read the channel) and "
            "DISCORD_WEBHOOK_URL (publisher-discord's webhook) or DISCORD_CHANNEL_ID"
        )
    if settings.channel_id is not None:
        return settings.channel_id
    webhook = settings.webhook
    assert webhook is not None  # readable: a channel id or a webhook
    return await api.webhook_channel(*webhook)


async def check_channel(
    settings: DiscordSettings,
    api: ChannelReader,
    channel: str,
    rows: list[Row],
    start: datetime,
    report: Report,
) -> None:
    """Fill `report` from the channel's messages since `start`, read page by page with progress."""
    webhook_id = settings.webhook[0] if settings.webhook else None
    after = snowflake_at(start)
    seen: dict[int, list[SeenEmbed]] = {}
    progress = Progress("channel messages read", None)
    async for page in api.messages_since(channel, after):
        for row_id, found in match_embeds(rows, page, webhook_id=webhook_id, after=after).items():
            seen.setdefault(row_id, []).extend(found)
        progress.advance(len(page), rows_seen=sum(1 for found in seen.values() if found))
    progress.finish(rows_seen=sum(1 for found in seen.values() if found))
    if progress.done == 0 and any(event_id_of(row) for row in rows):
        log.warning(
            "the channel shows no message at all since %s: nothing was posted, or the bot lacks Read "
            "Message History there (Discord then answers with no messages)",
            start.isoformat(),
        )
    for found in seen.values():
        found.sort(key=lambda embed: embed.message_id)
    report.window_start = start.isoformat()
    report.checks.extend(channel_checks(rows, seen))
