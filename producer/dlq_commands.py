"""The `producer dlq ...` commands: connect, run, print (a table, or JSON with --json)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator

from nats.aio.client import Client as NatsClient

from backfill.adapters import layout_from
from backfill.bus import AckPublisher, connect
from backfill.errors import BusError
from backfill.layout import Layout, ensure_layout
from backfill.outcome import DLQ_REASONS
from backfill.settings import NatsSettings, SettingsBundle
from backfill.wire import dlq_filter, dlq_subject
from producer.dlq import (
    DeadLetterRecord,
    ReplayCounts,
    Replayer,
    ReplaySelection,
    now_utc,
    purge,
    read_dead_letters,
    show,
)
from producer.progress import Progress

TABLE = "{seq:>8}  {row_id:>8}  {reason:<20} {attempts:>8}  {age:>8}  {error}"


def add_dlq_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dlq = commands.add_parser("dlq", help="inspect, replay and purge dead letters")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = sub.add_parser("list", help="sequence, row id, reason, attempts, age, error")
    listing.add_argument("--reason", choices=DLQ_REASONS)
    listing.add_argument("--json", action="store_true")
    one = sub.add_parser("show", help="one dead letter in full")
    one.add_argument("seq", type=int)
    replay = sub.add_parser(
        "replay", help="re-enqueue; a dead letter is removed only after its enqueue is acked"
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true")
    which.add_argument("--reason", choices=DLQ_REASONS)
    which.add_argument("--seq", type=int, nargs="+")
    which.add_argument("--ids", type=lambda t: [int(x) for x in t.split(",") if x.strip()])
    replay.add_argument("--dry-run", action="store_true")
    replay.add_argument("--json", action="store_true")
    wipe = sub.add_parser("purge", help="delete dead letters for good")
    scope = wipe.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all", action="store_true")
    scope.add_argument("--reason", choices=DLQ_REASONS)
    wipe.add_argument("--yes", action="store_true", help="required: purging cannot be undone")


async def _session(settings: SettingsBundle) -> tuple[NatsClient, Layout]:
    layout = layout_from(settings)
    nc = await connect(settings.get(NatsSettings).url, "backfill-producer dlq", reconnect_forever=False)
    await ensure_layout(nc.jetstream(timeout=10), layout, with_consumer=False)
    return nc, layout


async def _list(nc: NatsClient, layout: Layout, args: argparse.Namespace) -> int:
    now = now_utc()
    if not args.json:
        print(
            TABLE.format(
                seq="SEQ", row_id="ROW", reason="REASON", attempts="ATTEMPTS", age="AGE", error="ERROR"
            )
        )
    async for record in read_dead_letters(nc.jetstream(timeout=10), layout, args.reason):
        line = record.summary(now)
        if args.json:
            print(json.dumps(line))
        else:
            age = line["age_seconds"]
            print(
                TABLE.format(
                    **{
                        **line,
                        "row_id": line["row_id"] or "-",
                        "error": line["error"][:80],
                        "age": f"{age // 3600}h{age % 3600 // 60:02d}m" if age is not None else "-",
                    }
                )
            )
    return 0


async def _show(nc: NatsClient, layout: Layout, args: argparse.Namespace) -> int:
    record = await show(nc.jetstream(timeout=10), layout, args.seq)
    if record is None:
        print(f"no dead letter with sequence {args.seq}")
        return 1
    print(json.dumps(record.full(now_utc()), indent=2))
    return 0


async def _selected(
    records: AsyncIterator[DeadLetterRecord], selection: ReplaySelection, progress: Progress
) -> AsyncIterator[DeadLetterRecord]:
    async for record in records:
        if selection.matches(record):
            progress.advance()
            yield record


async def _replay(nc: NatsClient, layout: Layout, args: argparse.Namespace, run_id: str) -> int:
    js = nc.jetstream(timeout=10)
    selection = ReplaySelection(
        all=args.all, reason=args.reason, seqs=frozenset(args.seq or ()), row_ids=frozenset(args.ids or ())
    )
    publisher = AckPublisher(nc)
    counts = ReplayCounts()
    progress = Progress("replay", None)
    reason = args.reason if args.reason else None
    records = _selected(read_dead_letters(js, layout, reason), selection, progress)
    started = time.perf_counter()
    # --all and --reason replay everything their filter reads: the replayed prefix can be purged at once
    every = args.all or not (args.seq or args.ids)
    purge_filter = (
        (dlq_subject(layout.prefix, reason) if reason else dlq_filter(layout.prefix)) if every else None
    )
    await Replayer(js, publisher, layout, run_id, purge_filter).replay(records, counts, args.dry_run)
    elapsed = round(time.perf_counter() - started, 3)
    await publisher.close()
    progress.finish(replayed=counts.replayed, skipped=counts.skipped, failed=counts.failed)
    verb = "would replay" if args.dry_run else "replayed"
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": run_id,
                    "dry_run": args.dry_run,
                    "replayed": counts.replayed,
                    "skipped": counts.skipped,
                    "failed": counts.failed,
                    "elapsed_seconds": elapsed,
                    "notes": counts.notes,
                }
            )
        )
    else:
        print(f"{verb} {counts.replayed}, skipped {counts.skipped}, failed {counts.failed} (run {run_id})")
        for note in counts.notes:
            print(f"  {note}")
    return 1 if counts.failed else 0


async def _purge(nc: NatsClient, layout: Layout, args: argparse.Namespace) -> int:
    if not args.yes:
        print("purge deletes dead letters for good: add --yes to confirm")
        return 2
    removed = await purge(nc.jetstream(timeout=10), layout, None if args.all else args.reason)
    print(f"purged {removed} dead letters")
    return 0


async def run_dlq(settings: SettingsBundle, args: argparse.Namespace, run_id: str) -> int:
    nc, layout = await _session(settings)
    try:
        if args.dlq_command == "list":
            return await _list(nc, layout, args)
        if args.dlq_command == "show":
            return await _show(nc, layout, args)
        if args.dlq_command == "replay":
            return await _replay(nc, layout, args, run_id)
        return await _purge(nc, layout, args)
    except TimeoutError as exc:
        raise BusError(f"JetStream did not answer: {exc}") from exc
    finally:
        await nc.drain()
