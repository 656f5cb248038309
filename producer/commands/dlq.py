"""The `producer dlq ...` commands: connect, run, print (a table, or JSON with --json)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from backfill.adapters.jetstream.bus import AckPublisher, Bus, Connection, JetStream
from backfill.adapters.jetstream.deadletters import (
    dead_letter,
    dead_letter_counts,
    purge_dead_letters,
    read_dead_letters,
)
from backfill.adapters.jetstream.layout import Layout, require_layout
from backfill.core.deadletter import DeadLetterRecord
from backfill.core.errors import ConfigError
from backfill.core.outcome import DLQ_REASONS
from backfill.core.wire import dlq_reason_filter
from backfill.settings import BackfillSettings, NatsSettings, SettingsBundle
from backfill.wiring import connect_bus, layout_from
from producer.enqueue import StopRequest
from producer.progress import Progress
from producer.replay import ReplayCounts, Replayer, ReplaySelection, now_utc
from producer.runs import new_run_id
from producer.shell import Command, add_json, emit, id_list, needs

TABLE = "{seq:>8}  {row_id:>8}  {reason:<20} {attempts:>8}  {age:>8}  {error}"


def dlq_arguments(dlq: argparse.ArgumentParser) -> None:
    sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="sequence, row id, reason, attempts, age, error (read-only)")
    listing.add_argument("--reason", choices=DLQ_REASONS, help="only dead letters with this reason")
    add_json(listing, "every dead letter")
    listing.add_argument(
        "--jsonl", action="store_true", help="one JSON line per dead letter, as they are read"
    )
    one = sub.add_parser("show", help="one dead letter in full (read-only)")
    one.add_argument("seq", type=int, help="its sequence in the dead-letter stream (from `dlq list`)")
    add_json(one, "the dead letter")
    replay = sub.add_parser(
        "replay", help="re-enqueue; a dead letter is removed only after its enqueue is acked"
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter")
    which.add_argument("--reason", choices=DLQ_REASONS, help="every dead letter with this reason")
    which.add_argument("--seq", type=int, nargs="+", help="these sequences (from `dlq list`)")
    which.add_argument("--ids", type=id_list, help="the dead letters of these row ids (comma-separated)")
    replay.add_argument("--dry-run", action="store_true", help="count what would be replayed; change nothing")
    add_json(replay, "the summary")
    wipe = sub.add_parser("purge", help="delete dead letters for good")
    scope = wipe.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all", action="store_true", help="every dead letter")
    scope.add_argument("--reason", choices=DLQ_REASONS, help="every dead letter with this reason")
    wipe.add_argument("--yes", action="store_true", help="required: purging cannot be undone")
    add_json(wipe, "the number removed")


async def _session(settings: SettingsBundle) -> tuple[Bus, Layout]:
    """Never sets the layout up: a missing stream is NotFound (nothing was ever enqueued there)."""
    layout = layout_from(settings)
    bus = await connect_bus(settings, "backfill-producer dlq")
    try:
        await require_layout(bus.js, layout, with_consumer=False)
    except BaseException:
        await bus.close()
        raise
    return bus, layout


async def _list(js: JetStream, layout: Layout, args: argparse.Namespace) -> int:
    now = now_utc()
    if not (args.json or args.jsonl):
        print(
            TABLE.format(
                seq="SEQ", row_id="ROW", reason="REASON", attempts="ATTEMPTS", age="AGE", error="ERROR"
            )
        )
    listed: list[dict[str, Any]] = []
    async for record in read_dead_letters(js, layout, args.reason):
        line = record.summary(now)
        if args.json:
            listed.append(line)
        elif args.jsonl:
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
    if args.json:
        emit(args, {"dead_letters": listed, "total": len(listed)}, "")
    return 0


async def _show(js: JetStream, layout: Layout, args: argparse.Namespace) -> int:
    record = await dead_letter(js, layout, args.seq)
    full = record.full(now_utc())
    emit(args, full, json.dumps(full, indent=2, ensure_ascii=False))
    return 0


async def _selected(
    records: AsyncIterator[DeadLetterRecord],
    selection: ReplaySelection,
    progress: Progress,
    stop: StopRequest | None = None,
) -> AsyncIterator[DeadLetterRecord]:
    async for record in records:
        if stop is not None and stop.requested:
            return  # what was handed out is settled; the rest stays in the stream
        if selection.matches(record):
            progress.advance()
            yield record


async def replay_total(js: JetStream, layout: Layout, args: argparse.Namespace) -> int | None:
    """How many dead letters the selection covers, read from per-subject counts (None: only known at the
    end, for --ids)."""
    if args.seq:
        return len(set(args.seq))
    if args.ids:
        return None
    counts = await dead_letter_counts(js, layout)
    return counts.get(args.reason, 0) if args.reason else sum(counts.values())


async def _replay(
    nc: Connection, layout: Layout, args: argparse.Namespace, run_id: str, stop: StopRequest | None = None
) -> int:
    js = Bus(nc).js
    selection = ReplaySelection(
        all=args.all, reason=args.reason, seqs=frozenset(args.seq or ()), row_ids=frozenset(args.ids or ())
    )
    publisher = AckPublisher(nc)
    counts = ReplayCounts()
    total = await replay_total(js, layout, args)
    progress = Progress("replay", total)
    reason = args.reason if args.reason else None
    records = _selected(read_dead_letters(js, layout, reason), selection, progress, stop)
    started = time.perf_counter()
    # --all and --reason replay everything their filter reads: the replayed prefix can be purged at once
    every = args.all or not (args.seq or args.ids)
    purge_filter = dlq_reason_filter(layout.prefix, reason) if every else None
    await Replayer(js, publisher, layout, run_id, purge_filter).replay(records, counts, args.dry_run)
    elapsed = round(time.perf_counter() - started, 3)
    await publisher.close()
    progress.finish(replayed=counts.replayed, skipped=counts.skipped, failed=counts.failed)
    verb = "would replay" if args.dry_run else "replayed"
    interrupted = stop.signal_name if stop is not None else None
    data = {
        "run_id": run_id,
        "dry_run": args.dry_run,
        "total": total,
        "replayed": counts.replayed,
        "skipped": counts.skipped,
        "failed": counts.failed,
        "elapsed_seconds": elapsed,
        "interrupted": interrupted,
        "notes": counts.notes,
    }
    of = f" of {total}" if total is not None else ""
    lines = [f"{verb} {counts.replayed}{of}, skipped {counts.skipped}, failed {counts.failed} (run {run_id})"]
    lines += [f"  {note}" for note in counts.notes]
    if interrupted:
        lines.append(
            f"stopped by {interrupted}: the dead letters not replayed are still in {layout.dlq_stream}"
        )
    emit(args, data, "\n".join(lines))
    return 1 if counts.failed else 0


async def _purge(js: JetStream, layout: Layout, args: argparse.Namespace) -> int:
    removed = await purge_dead_letters(js, layout, None if args.all else args.reason)
    emit(args, {"purged": removed, "reason": args.reason}, f"purged {removed} dead letters")
    return 0


async def run_dlq(settings: SettingsBundle, args: argparse.Namespace, run_id: str) -> int:
    if args.dlq_command == "purge" and not args.yes:
        raise ConfigError("purge deletes dead letters for good: add --yes to confirm")
    bus, layout = await _session(settings)
    interrupt = getattr(args, "interrupt", None)
    try:
        if args.dlq_command == "list":
            return await _list(bus.js, layout, args)
        if args.dlq_command == "show":
            return await _show(bus.js, layout, args)
        if args.dlq_command == "replay":
            if interrupt is not None:
                interrupt.graceful = True  # stop reading; settle what was published; print the summary
            code = await _replay(bus.nc, layout, args, run_id, interrupt)
            return interrupt.exit_code if interrupt is not None and interrupt.requested else code
        return await _purge(bus.js, layout, args)
    finally:
        await bus.drain()


async def run_dlq_command(settings: SettingsBundle, args: argparse.Namespace) -> int:
    return await run_dlq(settings, args, f"replay-{new_run_id().removeprefix('run-')}")


DLQ = Command(
    dlq_arguments,
    run_dlq_command,
    needs(NatsSettings, BackfillSettings),
    {
        "dlq": "producer dlq list\nproducer dlq replay --reason jellyfin_not_found --dry-run",
        "dlq list": "producer dlq list --reason ambiguous_match\n"
        "producer dlq list --json | jq '.dead_letters[].row_id'",
        "dlq show": "producer dlq show 42",
        "dlq replay": "producer dlq replay --reason jellyfin_not_found\n"
        "producer dlq replay --ids 12,15 --json",
        "dlq purge": "producer dlq purge --reason invalid_message --yes",
    },
)
