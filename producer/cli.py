"""`producer`: find studio_board rows without Jellyfin metadata and enqueue them for the workers."""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

from backfill import version_text
from backfill.adapters.jetstream.bus import AckPublisher, Bus
from backfill.adapters.jetstream.layout import apply_changes, ensure_layout, plan_layout
from backfill.adapters.transport import make_client
from backfill.core.errors import (
    BackfillError,
    ConfigError,
    Exit,
    StreamConfigConflict,
    UpstreamError,
    exit_code,
)
from backfill.core.wire import Mode
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
from backfill.wiring import build_enricher, layout_from, open_catalog
from producer.control import CONTROL_GROUPS, add_control_parsers, run_control
from producer.dlq_commands import add_dlq_parser, run_dlq
from producer.enqueue import EnqueueCounts, Enqueuer, Selection, select_rows
from producer.evidence_commands import add_evidence_parsers, run_diff, run_listen, run_snapshot
from producer.monitoring import add_monitoring_parser, run_monitoring
from producer.preview import preview
from producer.progress import Progress
from producer.pushgateway import DEFAULT_JOB, push_counts
from producer.runs import run_log_for
from producer.shell import (
    Interrupt,
    add_json,
    completion,
    emit,
    guard_stdout,
    id_list,
    positive_int,
    run,
    warn,
    with_examples,
)
from producer.verify import VERIFY_GROUPS, add_verify_parser, run_verify
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

log = logging.getLogger("producer")


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


EXAMPLES = {
    "": """
producer enqueue --all-missing --dry-run      # what would be enqueued; writes nothing
producer enqueue --all-missing                # one request per candidate row
producer status                               # where the run stands
producer dlq list                             # what could not be resolved
producer completion bash > /etc/bash_completion.d/producer
""",
    "enqueue": """
producer enqueue --all-missing --dry-run --json | jq .would_enqueue
producer enqueue --all-missing --dry-run --jsonl > candidates.jsonl
producer enqueue --all-missing --mode metadata-only
producer enqueue --ids 12,15 --run-id fix-2026-12-06
""",
    "preview": "producer preview --limit 3\nproducer preview --ids 12 --json | jq '.rows[0].payload'",
    "status": "producer status\nproducer status --json --sample 0 | jq .backlog",
    "pause": "producer pause\nproducer pause --pushgateway http://pushgateway:9091 --json",
    "resume": "producer resume",
    "layout": "producer layout            # what differs from this environment (exit 1 when anything does)\n"
    "producer layout --apply    # show the differences, then make them",
    "dlq": "producer dlq list\nproducer dlq replay --reason jellyfin_not_found --dry-run",
    "dlq list": "producer dlq list --reason ambiguous_match\n"
    "producer dlq list --json | jq '.dead_letters[].row_id'",
    "dlq show": "producer dlq show 42",
    "dlq replay": "producer dlq replay --reason jellyfin_not_found\nproducer dlq replay --ids 12,15 --json",
    "dlq purge": "producer dlq purge --reason invalid_message --yes",
    "listen": "producer listen --topics content.published.v1 --max 5 --compact",
    "snapshot": "producer snapshot --out before.jsonl\n"
    "producer snapshot --out after.jsonl --ids-from before.jsonl",
    "diff": "producer diff before.jsonl after.jsonl\nproducer diff before.jsonl after.jsonl --json",
    "monitoring": "producer monitoring --prometheus-config PMOVES/monitoring/prometheus/prometheus.yml "
    "--out PMOVES/monitoring/backfill",
    "completion": 'source <(producer completion bash)\nproducer completion zsh > "${fpath[1]}/_producer"',
    "verify": "producer verify --run-id run-20261206T101500Z-a1b2c3\n"
    "producer verify --ids 12,15 --json | jq .totals",
}


EXIT_CODES = """exit codes:
  0    done                                  1    done, but something failed (or, layout: differs)
  2    usage or configuration error          3    NATS, JetStream or an upstream refused or was out of reach
  4    what the command reads does not exist 130  interrupted (Ctrl-C)   143  terminated (SIGTERM)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="producer", description=__doc__)
    parser.add_argument("--version", action="version", version=version_text("producer"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    enqueue = commands.add_parser("enqueue", help="enqueue one backfill request per candidate row")
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
        "--pushgateway", metavar="URL", help="push the run's counts to a Prometheus Pushgateway"
    )
    add_youtube_options(enqueue)
    add_verify_parser(commands)
    add_dlq_parser(commands)
    add_evidence_parsers(commands)
    add_control_parsers(commands)
    add_monitoring_parser(commands)
    view = commands.add_parser("preview", help="print the payloads workers would republish (read-only)")
    _add_selection(view, all_missing=False)
    add_json(view, "every row's payload")
    add_youtube_options(view)
    view.set_defaults(limit=None)
    apply = commands.add_parser(
        "layout", help="compare the streams and consumer with this environment; --apply changes them"
    )
    apply.add_argument("--apply", action="store_true", help="after showing the differences, make them")
    add_json(apply, "the differences")
    shells = commands.add_parser("completion", help="print a shell completion script")
    shells.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")
    with_examples(parser, EXAMPLES)
    parser.epilog = f"{parser.epilog}\n{EXIT_CODES}"
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "preview" and args.limit is None and not args.ids:
        args.limit = 5
    if args.command == "enqueue" and args.jsonl and not args.dry_run:
        parser.error("--jsonl lists the rows of a --dry-run")
    if getattr(args, "jsonl", False) and args.json:
        parser.error("--json and --jsonl: choose one")
    return args


def selection_from(args: argparse.Namespace) -> Selection:
    return Selection(ids=args.ids or (), since_id=args.since_id, limit=args.limit)


async def dry_run(settings: SettingsBundle, args: argparse.Namespace) -> int:
    """Every candidate: a line of text each, JSON lines (--jsonl), or one document (--json)."""
    http = make_client(settings.get(BackfillSettings).http_timeout)
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
    http = make_client(backfill.http_timeout)
    bus = await Bus.connect(
        settings.get(NatsSettings).url, f"backfill-producer {run_id}", reconnect_forever=False
    )
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
    if args.pushgateway:
        try:
            await push_counts(args.pushgateway, DEFAULT_JOB, run_id, counts.as_dict())
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
    http = make_client(settings.get(BackfillSettings).http_timeout)
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


async def run_layout(settings: SettingsBundle, args: argparse.Namespace) -> int:
    """The differences between the server and this environment's layout; with --apply, made."""
    layout = layout_from(settings)
    bus = await Bus.connect(
        settings.get(NatsSettings).url, "backfill-producer layout", reconnect_forever=False
    )
    try:
        plan = await plan_layout(bus.js, layout)
        if plan.conflicts:
            raise StreamConfigConflict(" ".join(plan.conflicts))
        if args.apply:
            await apply_changes(bus.js, layout, plan.changes)
    finally:
        await bus.drain()
    verb = "applied" if args.apply else "differs"
    lines = [change.render() for change in plan.changes] or ["the layout matches this environment"]
    if plan.changes:
        lines.append(
            f"{len(plan.changes)} {verb}" + ("" if args.apply else ": `producer layout --apply` makes it so")
        )
    data = {"applied": bool(args.apply and plan.changes), "changes": [c.as_dict() for c in plan.changes]}
    emit(args, data, "\n".join(lines))
    return int(Exit.FAILED if plan.changes and not args.apply else Exit.OK)


async def run_dlq_command(settings: SettingsBundle, args: argparse.Namespace) -> int:
    return await run_dlq(settings, args, f"replay-{new_run_id().removeprefix('run-')}")


GROUPS: dict[str, list[type[Any]]] = {
    "dlq": [NatsSettings, BackfillSettings],
    "listen": [NatsSettings, BackfillSettings],
    "snapshot": [CatalogSettings, BackfillSettings],
    "diff": [BackfillSettings],
    "layout": [NatsSettings, BackfillSettings],
    "preview": [CatalogSettings, JellyfinSettings, StorageSettings, BackfillSettings],
    "verify": VERIFY_GROUPS,
    **CONTROL_GROUPS,
}


def groups_for(args: argparse.Namespace) -> list[type[Any]]:
    """Only the settings a command needs: a dry run needs no NATS, a diff needs nothing remote."""
    if args.command == "enqueue":
        return (
            [CatalogSettings, BackfillSettings, *youtube_groups(args)]
            if args.dry_run
            else [NatsSettings, CatalogSettings, BackfillSettings]
        )
    return GROUPS[args.command] + youtube_groups(args)


def main(argv: list[str] | None = None) -> int:
    return guard_stdout("producer", _main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args.command == "completion":
        print(completion("producer", build_parser(), args.shell), end="")
        return int(Exit.OK)
    if args.command == "monitoring":  # writes files only: no settings, no network
        return run_monitoring(args)
    try:
        settings = load_settings(groups_for(args))
    except ConfigError as exc:
        print(f"producer: {exc}", file=sys.stderr)
        return int(Exit.CONFIG)
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
        "layout": run_layout,
        "verify": run_verify,
    }
    args.interrupt = Interrupt()
    try:
        return run("producer", commands[args.command](settings, args), args.interrupt)
    except BackfillError as exc:
        print(f"producer: {exc}", file=sys.stderr)
        return int(exit_code(exc))


if __name__ == "__main__":
    sys.exit(main())
