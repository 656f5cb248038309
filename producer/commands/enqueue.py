"""`producer enqueue` (and its `--dry-run`) and `producer preview`: the candidate rows, listed, previewed
or enqueued one request per row."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from backfill.adapters.jetstream.bus import AckPublisher
from backfill.adapters.jetstream.layout import ensure_layout
from backfill.core.errors import Exit, UpstreamError
from backfill.core.wire import Mode
from backfill.settings import (
    BackfillSettings,
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    SettingsBundle,
    StorageSettings,
)
from backfill.wiring import (
    build_enricher,
    build_pushgateway,
    connect_bus,
    http_client,
    layout_from,
    open_catalog,
)
from producer.enqueue import EnqueueCounts, Enqueuer, Selection, select_rows
from producer.preview import preview
from producer.progress import Progress
from producer.runs import new_run_id, run_log_for
from producer.shell import Command, Interrupt, add_json, emit, id_list, positive_int, warn
from producer.youtube_linking import (
    add_youtube_options,
    dry_run_links,
    linking_from,
    linking_options,
    links_of,
    links_summary,
    youtube_column,
    youtube_groups,
)


def _add_selection(parser: argparse.ArgumentParser, *, all_missing: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=all_missing)
    if all_missing:
        group.add_argument(
            "--all-missing", action="store_true", help="every published row without Jellyfin URL"
        )
    group.add_argument("--ids", type=id_list, help="comma-separated row ids (still only candidates)")
    parser.add_argument("--limit", type=positive_int, help="at most this many rows")
    parser.add_argument("--since-id", type=int, default=0, help="only rows with id above this")


def enqueue_arguments(enqueue: argparse.ArgumentParser) -> None:
    _add_selection(enqueue, all_missing=True)
    enqueue.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.REPUBLISH.value,
        help="republish (new Discord embeds) or metadata-only (update rows only); default: %(default)s",
    )
    enqueue.add_argument("--dry-run", action="store_true", help="count and list; write nothing anywhere")
    enqueue.add_argument("--run-id", help="run id stored on each row (default: generated)")
    add_json(enqueue, "the summary (with --dry-run: the summary and every row)")
    enqueue.add_argument(
        "--jsonl", action="store_true", help="with --dry-run: one JSON line per row, the summary on stderr"
    )
    enqueue.add_argument(
        "--pushgateway",
        metavar="URL",
        help="push the run's counts to a Prometheus Pushgateway (default: BACKFILL_PUSHGATEWAY_URL)",
    )
    add_youtube_options(enqueue)


def preview_arguments(view: argparse.ArgumentParser) -> None:
    _add_selection(view, all_missing=False)
    add_json(view, "every row's payload")
    add_youtube_options(view)
    view.set_defaults(limit=None)


def selection_from(args: argparse.Namespace) -> Selection:
    return Selection(ids=args.ids or (), since_id=args.since_id, limit=args.limit)


async def dry_run(settings: SettingsBundle, args: argparse.Namespace) -> int:
    """Every candidate: a line of text each, JSON lines (--jsonl), or one document (--json)."""
    http = http_client(settings)
    counts = EnqueueCounts()
    rows: list[dict[str, Any]] = []
    links = dry_run_links(settings, args, http)
    try:
        async with open_catalog(settings, http) as catalog:
            async for page in select_rows(catalog, selection_from(args), counts):
                for row in page:
                    counts.candidates += 1
                    item = row.meta_dict.get("jellyfin_item_id")
                    listed = {"id": row.id, "jellyfin_item_id": item, "title": row.title}
                    listed |= await links_of(links, row)
                    if args.json:
                        rows.append(listed)
                    elif args.jsonl:
                        print(json.dumps(listed, ensure_ascii=False))
                    else:
                        print(f"{row.id}\t{item or '-'}\t{row.title or ''}{youtube_column(listed)}")
    finally:
        await http.aclose()
    summary = {"dry_run": True, "would_enqueue": counts.candidates, "not_candidates": counts.not_candidates}
    summary |= links_summary(links)
    text = (
        f"dry run: would enqueue {counts.candidates} rows "
        f"({counts.not_candidates} given ids are not candidates); nothing was written"
    )
    if args.jsonl:
        print(text, file=sys.stderr)
    else:
        emit(args, {**summary, "rows": rows}, text)
    return 0


async def enqueue(settings: SettingsBundle, args: argparse.Namespace) -> int:
    backfill = settings.get(BackfillSettings)
    run_id = args.run_id or new_run_id()
    layout = layout_from(settings)
    http = http_client(settings)
    bus = await connect_bus(settings, f"backfill-producer {run_id}")
    counts = EnqueueCounts()
    interrupt: Interrupt = args.interrupt
    interrupt.graceful = True  # stop paging, wait for the publishes in flight, print the summary
    try:
        await ensure_layout(bus.js, layout)
        async with open_catalog(settings, http) as catalog:
            total = None if args.ids else await catalog.count_candidates(args.since_id)
            total = min(total, args.limit) if (total is not None and args.limit) else total
            publisher = AckPublisher(bus.nc)
            progress = Progress("enqueue", total)
            run_log = run_log_for(settings, http)
            await run_log.start(run_id, args.mode, run_options(args))
            enqueuer = Enqueuer(
                publisher, layout.prefix, backfill.version, Mode(args.mode), run_id, linking_from(args)
            )
            pages = select_rows(catalog, selection_from(args), counts)
            await enqueuer.run(pages, counts, progress, interrupt)
            progress.finish(
                enqueued=counts.enqueued, already_pending=counts.already_pending, failed=counts.failed
            )
            await run_log.finish(run_id, {k: v for k, v in counts.as_dict().items() if isinstance(v, int)})
            await publisher.close()
    finally:
        await bus.drain()
        await http.aclose()
    print_summary(run_id, args, counts, interrupt)
    pushgateway = build_pushgateway(settings, args.pushgateway)
    if pushgateway is not None:
        try:
            await pushgateway.push_counts(run_id, counts.as_dict())
        except UpstreamError as exc:  # the rows are enqueued either way: a warning, not a failed run
            warn("producer", f"the run's counts were not pushed to the Pushgateway: {exc}")
    if interrupt.requested:
        return interrupt.exit_code
    return int(Exit.FAILED if counts.failed else Exit.OK)


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {"ids": args.ids, "limit": args.limit, "since_id": args.since_id, "mode": args.mode}
    return options | linking_options(args)


def print_summary(run_id: str, args: argparse.Namespace, counts: EnqueueCounts, interrupt: Interrupt) -> None:
    data: dict[str, Any] = {
        "run_id": run_id,
        "mode": args.mode,
        **counts.as_dict(),
        "interrupted": interrupt.signal.name if interrupt.signal else None,
    }
    text = (
        f"run {run_id} ({args.mode}): {counts.enqueued} enqueued, {counts.already_pending} already pending, "
        f"{counts.failed} failed, {counts.not_candidates} not candidates"
    )
    if counts.failed_ids:
        text += f"\nfailed row ids: {','.join(map(str, counts.failed_ids[:50]))}"
    if interrupt.signal:
        text += (
            f"\nstopped by {interrupt.signal.name} after {counts.candidates} rows read; "
            f"{counts.unconfirmed} publishes had no answer yet. The same command again carries on: "
            "rows already waiting are reported already pending, never queued twice."
        )
    emit(args, data, text)


async def run_preview(settings: SettingsBundle, args: argparse.Namespace) -> int:
    http = http_client(settings)
    records: list[dict[str, Any]] = []
    try:
        async with open_catalog(settings, http) as catalog:
            enricher = build_enricher(settings, http)
            rows = select_rows(catalog, selection_from(args), EnqueueCounts())
            async for record in preview(enricher, rows, linking_from(args)):
                if args.json:
                    records.append(record)
                else:
                    print(json.dumps(record, indent=2, ensure_ascii=False))
    finally:
        await http.aclose()
    if args.json:
        emit(args, {"rows": records}, "")
    return 0


async def run_enqueue(settings: SettingsBundle, args: argparse.Namespace) -> int:
    return await (dry_run if args.dry_run else enqueue)(settings, args)


def enqueue_settings(args: argparse.Namespace) -> list[type[Any]]:
    """Only the settings the run needs: a dry run needs no NATS (and PMOVES.yt with --link-youtube)."""
    if args.dry_run:
        return [CatalogSettings, BackfillSettings, *youtube_groups(args)]
    return [NatsSettings, CatalogSettings, BackfillSettings]


def enqueue_usage_error(args: argparse.Namespace) -> str | None:
    return "--jsonl lists the rows of a --dry-run" if args.jsonl and not args.dry_run else None


def preview_settings(args: argparse.Namespace) -> list[type[Any]]:
    return [CatalogSettings, JellyfinSettings, StorageSettings, BackfillSettings, *youtube_groups(args)]


def preview_limit(args: argparse.Namespace) -> str | None:
    """A preview without --ids or --limit shows the first 5 candidates."""
    if args.limit is None and not args.ids:
        args.limit = 5
    return None


ENQUEUE = Command(
    enqueue_arguments,
    run_enqueue,
    enqueue_settings,
    {
        "enqueue": """
producer enqueue --all-missing --dry-run --json | jq .would_enqueue
producer enqueue --all-missing --dry-run --jsonl > candidates.jsonl
producer enqueue --all-missing --mode metadata-only
producer enqueue --ids 12,15 --run-id fix-2026-12-06
"""
    },
    enqueue_usage_error,
)
PREVIEW = Command(
    preview_arguments,
    run_preview,
    preview_settings,
    {"preview": "producer preview --limit 3\nproducer preview --ids 12 --json | jq '.rows[0].payload'"},
    preview_limit,
)
