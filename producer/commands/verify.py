"""`producer verify`: did Discord get the embeds? The runbook's evidence that a run's events went out.

For every row a run republished (or the rows named by `--ids`; every republished row without either),
the delivery publisher-discord recorded in `DISCORD_METRICS_TABLE` for the row's event id (delivered,
failed or not seen yet) and whether the event carried the embed's deep link, duration and thumbnail
(`producer.deliveries`). Exit codes (`backfill.core.errors.Exit`): 0 nothing failed, 1 a delivery failed,
2 usage or configuration, 3 the catalog refused to answer, 4 the metrics table does not exist.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from typing import Any

from backfill.core.errors import Exit
from backfill.core.model import Row
from backfill.core.ports import Catalog, MetricsTable
from backfill.settings import BackfillSettings, CatalogSettings, DiscordMetricsSettings, SettingsBundle
from backfill.wiring import build_metrics_table, http_client, open_catalog
from producer.deliveries import Report, by_event, check_row, event_id_of, render
from producer.shell import Command, add_json, emit, id_list, needs

ID_CHUNK = 1000


def verify_arguments(verify: argparse.ArgumentParser) -> None:
    verify.description = (
        "For every row a run republished (its meta.backfill_event_id), the delivery "
        "publisher-discord recorded in DISCORD_METRICS_TABLE: delivered, failed (webhook_success false) "
        "or not seen yet; and whether the event carried the embed's deep link, duration and thumbnail. "
        "Exit 0: nothing failed; 1: a delivery failed; 4: the metrics table does not exist."
    )
    which = verify.add_mutually_exclusive_group()
    which.add_argument("--run-id", help="the rows this run republished (meta.backfill_run_id)")
    which.add_argument("--ids", type=id_list, help="comma-separated row ids")
    add_json(verify, "the report (totals and every row)")


def table_missing_notice(table: str) -> str:
    return (
        f"producer: the Discord metrics table {table!r} does not exist: publisher-discord records "
        "deliveries there (PMOVES ships no DDL for it); set DISCORD_METRICS_TABLE to the table it "
        "writes, or nothing can tell whether Discord got the embeds"
    )


async def _rows(catalog: Catalog, args: argparse.Namespace, report: Report) -> AsyncIterator[list[Row]]:
    if not args.ids:
        async for page in catalog.republished_rows(args.run_id):
            yield page
        return
    for start in range(0, len(args.ids), ID_CHUNK):
        chunk = args.ids[start : start + ID_CHUNK]
        rows = sorted(await catalog.fetch_rows(chunk), key=lambda row: row.id)
        report.missing_ids.extend(sorted(set(chunk) - {row.id for row in rows}))
        yield rows


async def _check(catalog: Catalog, table: MetricsTable, args: argparse.Namespace, report: Report) -> bool:
    """Fill `report` page by page; False when the metrics table does not exist."""
    if await table.records([]) is None:
        return False
    async for page in _rows(catalog, args, report):
        event_ids = sorted({event_id for row in page if (event_id := event_id_of(row)) is not None})
        records = await table.records(event_ids) if event_ids else []
        if records is None:
            return False
        grouped = by_event(records)
        report.checks.extend(check_row(row, grouped) for row in page)
    return True


def selection_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"run_id": args.run_id, "ids": args.ids}


async def run_verify(settings: SettingsBundle, args: argparse.Namespace) -> int:
    http = http_client(settings)
    table = build_metrics_table(settings, http)
    report = Report(table.name, selection_of(args))
    try:
        async with open_catalog(settings, http) as catalog:
            found = await _check(catalog, table, args, report)
    finally:
        await http.aclose()
    if not found:
        print(table_missing_notice(table.name), file=sys.stderr)
        return int(Exit.NOT_FOUND)
    if not report.checks:
        print("producer: no republished rows match this selection", file=sys.stderr)
    emit(args, report.as_dict(), render(report))
    return int(Exit.FAILED if report.failed else Exit.OK)


VERIFY = Command(
    verify_arguments,
    run_verify,
    needs(CatalogSettings, DiscordMetricsSettings, BackfillSettings),
    {
        "verify": "producer verify --run-id run-20261206T101500Z-a1b2c3\n"
        "producer verify --ids 12,15 --json | jq .totals"
    },
)
