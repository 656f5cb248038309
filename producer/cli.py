"""`producer`: find studio_board rows without Jellyfin metadata and enqueue them for the workers."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

from backfill.adapters import build_enricher, layout_from, open_catalog
from backfill.bus import AckPublisher, connect
from backfill.errors import BackfillError, ConfigError, UpstreamError
from backfill.layout import ensure_layout
from backfill.logs import setup_logging
from backfill.settings import (
    BackfillSettings,
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    SettingsBundle,
    StorageSettings,
    load_settings,
)
from backfill.transport import make_client
from backfill.wire import Mode
from producer.control import CONTROL_GROUPS, add_control_parsers, run_control
from producer.dlq_commands import add_dlq_parser, run_dlq
from producer.enqueue import EnqueueCounts, Enqueuer, Selection, select_rows
from producer.evidence_commands import add_evidence_parsers, run_diff, run_listen, run_snapshot
from producer.monitoring import add_monitoring_parser, run_monitoring
from producer.preview import preview
from producer.progress import Progress
from producer.pushgateway import DEFAULT_JOB, push_counts
from producer.runs import run_log_for

log = logging.getLogger("producer")


def id_list(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--ids takes comma-separated integers, got {text!r}") from exc
    if not ids or any(i <= 0 for i in ids):
        raise argparse.ArgumentTypeError("--ids takes positive row ids")
    return ids


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def new_run_id(now: datetime | None = None) -> str:
    return f"run-{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _add_selection(parser: argparse.ArgumentParser, *, all_missing: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=all_missing)
    if all_missing:
        group.add_argument(
            "--all-missing", action="store_true", help="every published row without Jellyfin URL"
        )
    group.add_argument("--ids", type=id_list, help="comma-separated row ids (still only candidates)")
    parser.add_argument("--limit", type=positive_int, help="at most this many rows")
    parser.add_argument("--since-id", type=int, default=0, help="only rows with id above this")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="producer", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    enqueue = commands.add_parser("enqueue", help="enqueue one backfill request per candidate row")
    _add_selection(enqueue, all_missing=True)
    enqueue.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.REPUBLISH.value,
        help="republish (new Discord embeds) or metadata-only (update rows only)",
    )
    enqueue.add_argument("--dry-run", action="store_true", help="count and list; write nothing anywhere")
    enqueue.add_argument("--run-id", help="run id stored on each row (default: generated)")
    enqueue.add_argument("--json", action="store_true", help="print the summary as JSON")
    enqueue.add_argument(
        "--pushgateway", metavar="URL", help="push the run's counts to a Prometheus Pushgateway"
    )
    add_dlq_parser(commands)
    add_evidence_parsers(commands)
    add_control_parsers(commands)
    add_monitoring_parser(commands)
    view = commands.add_parser("preview", help="print the payloads workers would republish (read-only)")
    _add_selection(view, all_missing=False)
    view.set_defaults(limit=None)
    args = parser.parse_args(argv)
    if args.command == "preview" and args.limit is None and not args.ids:
        args.limit = 5
    return args


def selection_from(args: argparse.Namespace) -> Selection:
    return Selection(ids=args.ids or (), since_id=args.since_id, limit=args.limit)


async def dry_run(settings: SettingsBundle, args: argparse.Namespace) -> int:
    http = make_client(settings.get(BackfillSettings).http_timeout)
    counts = EnqueueCounts()
    try:
        async with open_catalog(settings, http) as catalog:
            async for page in select_rows(catalog, selection_from(args), counts):
                for row in page:
                    counts.candidates += 1
                    item = row.meta_dict.get("jellyfin_item_id") or "-"
                    print(f"{row.id}\t{item}\t{row.title or ''}")
    finally:
        await http.aclose()
    summary = {"dry_run": True, "would_enqueue": counts.candidates, "not_candidates": counts.not_candidates}
    print(
        json.dumps(summary)
        if args.json
        else f"dry run: would enqueue {counts.candidates} rows "
        f"({counts.not_candidates} given ids are not candidates); nothing was written"
    )
    return 0


async def enqueue(settings: SettingsBundle, args: argparse.Namespace) -> int:
    backfill = settings.get(BackfillSettings)
    run_id = args.run_id or new_run_id()
    layout = layout_from(settings)
    http = make_client(backfill.http_timeout)
    nc = await connect(settings.get(NatsSettings).url, f"backfill-producer {run_id}", reconnect_forever=False)
    counts = EnqueueCounts()
    try:
        await ensure_layout(nc.jetstream(timeout=10), layout)
        async with open_catalog(settings, http) as catalog:
            total = None if args.ids else await catalog.count_candidates(args.since_id)
            total = min(total, args.limit) if (total is not None and args.limit) else total
            publisher = AckPublisher(nc)
            progress = Progress("enqueue", total)
            run_log = run_log_for(settings, http)
            await run_log.start(run_id, args.mode, run_options(args))
            enqueuer = Enqueuer(publisher, layout.prefix, backfill.version, Mode(args.mode), run_id)
            await enqueuer.run(select_rows(catalog, selection_from(args), counts), counts, progress)
            progress.finish(
                enqueued=counts.enqueued, already_pending=counts.already_pending, failed=counts.failed
            )
            await run_log.finish(run_id, {k: v for k, v in counts.as_dict().items() if isinstance(v, int)})
            await publisher.close()
    finally:
        await nc.drain()
        await http.aclose()
    print_summary(run_id, args, counts)
    if args.pushgateway:
        try:
            await push_counts(args.pushgateway, DEFAULT_JOB, run_id, counts.as_dict())
        except UpstreamError as exc:  # the rows are enqueued either way: a warning, not a failed run
            print(f"warning: the run's counts were not pushed to the Pushgateway: {exc}", file=sys.stderr)
    return 1 if counts.failed else 0


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"ids": args.ids, "limit": args.limit, "since_id": args.since_id, "mode": args.mode}


def print_summary(run_id: str, args: argparse.Namespace, counts: EnqueueCounts) -> None:
    data: dict[str, Any] = {"run_id": run_id, "mode": args.mode, **counts.as_dict()}
    if args.json:
        print(json.dumps(data))
        return
    print(
        f"run {run_id} ({args.mode}): {counts.enqueued} enqueued, {counts.already_pending} already pending, "
        f"{counts.failed} failed, {counts.not_candidates} not candidates"
    )
    if counts.failed_ids:
        print(f"failed row ids: {','.join(map(str, counts.failed_ids[:50]))}")


async def run_preview(settings: SettingsBundle, args: argparse.Namespace) -> int:
    http = make_client(settings.get(BackfillSettings).http_timeout)
    try:
        async with open_catalog(settings, http) as catalog:
            enricher = build_enricher(settings, http)
            rows = select_rows(catalog, selection_from(args), EnqueueCounts())
            async for record in preview(enricher, rows):
                print(json.dumps(record, indent=2, ensure_ascii=False))
    finally:
        await http.aclose()
    return 0


async def run_dlq_command(settings: SettingsBundle, args: argparse.Namespace) -> int:
    return await run_dlq(settings, args, f"replay-{new_run_id().removeprefix('run-')}")


GROUPS: dict[str, list[type[Any]]] = {
    "dlq": [NatsSettings, BackfillSettings],
    "listen": [NatsSettings, BackfillSettings],
    "snapshot": [CatalogSettings, BackfillSettings],
    "diff": [BackfillSettings],
    "preview": [CatalogSettings, JellyfinSettings, StorageSettings, BackfillSettings],
    **CONTROL_GROUPS,
}


def groups_for(args: argparse.Namespace) -> list[type[Any]]:
    """Only the settings a command needs: a dry run needs no NATS, a diff needs nothing remote."""
    if args.command == "enqueue":
        return (
            [CatalogSettings, BackfillSettings]
            if args.dry_run
            else [NatsSettings, CatalogSettings, BackfillSettings]
        )
    return GROUPS[args.command]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "monitoring":  # writes files only: no settings, no network
        return run_monitoring(args)
    try:
        settings = load_settings(groups_for(args))
    except ConfigError as exc:
        print(f"producer: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.get(BackfillSettings).log_format)
    commands = {
        "preview": run_preview,
        "enqueue": dry_run if getattr(args, "dry_run", False) else enqueue,
        "dlq": run_dlq_command,
        "listen": run_listen,
        "snapshot": run_snapshot,
        "diff": run_diff,
        "pause": run_control,
        "resume": run_control,
        "status": run_control,
    }
    command = commands[args.command]
    try:
        return asyncio.run(command(settings, args))
    except BackfillError as exc:
        print(f"producer: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
