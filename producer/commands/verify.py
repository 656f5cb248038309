"""`producer verify`: did Discord get the embeds? The runbook's evidence that a run's events went out.

For every row a run republished (or the rows named by `--ids`; every republished row without either),
whether Discord got its embed, from one of two sources (`--source`; by default the channel when
DISCORD_BOT_TOKEN and the webhook or channel are set, else the table), and which parts the embed shows
(`producer.deliveries`; `producer.verify_sources` reads the sources):
- `discord`: the channel publisher-discord's webhook posts to, read back with the bot's token;
- `metrics`: publisher-discord's `DISCORD_METRICS_TABLE`, through the catalog's backend.
Exit codes (`backfill.core.errors.Exit`): 0 every republished row delivered once, 1 a row not
delivered (failed, not seen) or delivered more than once, 2 usage or configuration, 3 an upstream
refused (Discord's 401 or 403 name what to fix) or was out of reach, 4 the source does not exist (the
metrics table, Discord's channel or webhook).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from backfill.adapters.transport import HttpClient
from backfill.core.errors import ConfigError, Exit
from backfill.settings import (
    BackfillSettings,
    CatalogSettings,
    DiscordMetricsSettings,
    DiscordSettings,
    SettingsBundle,
)
from backfill.wiring import build_channel_reader, build_metrics_table, http_client, open_catalog
from producer.deliveries import DISCORD, METRICS_TABLE, Report, render
from producer.shell import Command, add_json, emit, id_list, needs
from producer.verify_sources import (
    check_channel,
    check_metrics,
    choose_source,
    find_channel,
    parse_time,
    selected_rows,
    window_start,
)


def verify_arguments(verify: argparse.ArgumentParser) -> None:
    verify.description = (
        "For every row a run republished (its meta.backfill_event_id): with --source discord, "
        "its own backfill embed in the channel publisher-discord's webhook posts to (delivered, with how "
        "many embeds the channel shows for it, or not seen); with --source metrics, what publisher-discord "
        "recorded in DISCORD_METRICS_TABLE (delivered, failed or not seen). And the embed's link, Duration, "
        "Jellyfin field and thumbnail, judged against what the Jellyfin item has. "
        "Exit 0: every republished row delivered once; 1: a row not delivered, or delivered twice; "
        "4: the source does not exist."
    )
    which = verify.add_mutually_exclusive_group()
    which.add_argument("--run-id", help="the rows this run republished (meta.backfill_run_id)")
    which.add_argument("--ids", type=id_list, help="comma-separated row ids")
    verify.add_argument(
        "--source",
        choices=[DISCORD, METRICS_TABLE],
        help="where the evidence comes from (default: discord when DISCORD_BOT_TOKEN and DISCORD_WEBHOOK_URL "
        "or DISCORD_CHANNEL_ID are set, else metrics)",
    )
    verify.add_argument(
        "--since",
        type=parse_time,
        help="read the evidence from this time on (ISO 8601; default: when the run began, as its id and its "
        "rows tell)",
    )
    add_json(verify, "the report (totals and every row)")


def table_missing_notice(table: str) -> str:
    return (
        f"producer: the Discord metrics table {table!r} does not exist: publisher-discord records "
        "deliveries there, and PMOVES ships no DDL for it: install sql/003_publisher_discord_metrics.sql "
        "(README, runbook step 7) or set DISCORD_METRICS_TABLE to the table it writes; or read the channel "
        "itself (--source discord)"
    )


def selection_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"run_id": args.run_id, "ids": args.ids}


def _source_notice(source: str, origin: str) -> str:
    if source == DISCORD:
        return (
            f"producer: verify: reading the Discord channel {origin} (--source metrics reads "
            "publisher-discord's table)"
        )
    return (
        f"producer: verify: reading publisher-discord's table {origin} (--source discord reads the channel "
        "itself, with DISCORD_BOT_TOKEN and DISCORD_WEBHOOK_URL)"
    )


async def _fill(
    settings: SettingsBundle, args: argparse.Namespace, source: str, http: HttpClient
) -> Report | None:
    """The report from `source`; None when the metrics table does not exist."""
    discord = settings.get(DiscordSettings)
    async with open_catalog(settings, http) as catalog:
        if source == DISCORD:
            api = build_channel_reader(settings, http)
            channel = await find_channel(discord, api)
            report = Report(DISCORD, channel, selection_of(args))
            print(_source_notice(source, channel), file=sys.stderr)
            rows = await selected_rows(catalog, args, report)
            start = window_start(rows, args.run_id, args.since)
            if not rows:
                return report
            if start is None:
                raise ConfigError(
                    "when the run began is unknown (its id names no time and its rows no "
                    "backfill_published_at): give --since"
                )
            await check_channel(discord, api, channel, rows, start, report)
            return report
        table = build_metrics_table(settings, http)
        report = Report(METRICS_TABLE, table.name, selection_of(args))
        print(_source_notice(source, table.name), file=sys.stderr)
        rows = await selected_rows(catalog, args, report)
        found = await check_metrics(table, rows, window_start(rows, args.run_id, args.since), report)
        return report if found else None


async def run_verify(settings: SettingsBundle, args: argparse.Namespace) -> int:
    source = choose_source(args, settings.get(DiscordSettings))
    http = http_client(settings)
    try:
        report = await _fill(settings, args, source, http)
    finally:
        await http.aclose()
    if report is None:
        print(table_missing_notice(settings.get(DiscordMetricsSettings).table), file=sys.stderr)
        return int(Exit.NOT_FOUND)
    if not report.checks:
        print("producer: no republished rows match this selection", file=sys.stderr)
    emit(args, report.as_dict(), render(report))
    return int(Exit.FAILED if report.unsettled else Exit.OK)


VERIFY = Command(
    verify_arguments,
    run_verify,
    needs(CatalogSettings, DiscordMetricsSettings, DiscordSettings, BackfillSettings),
    {
        "verify": "producer verify --run-id run-20261206T101500Z-a1b2c3   # the channel, or else the table\n"
        "producer verify --source discord --run-id run-20261206T101500Z-a1b2c3 --json | jq .totals\n"
        "producer verify --source metrics --ids 12,15"
    },
)
