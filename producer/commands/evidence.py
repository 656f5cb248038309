"""`producer listen | snapshot | diff`: the runbook's evidence, as commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from backfill.core.errors import ConfigError, NotFound
from backfill.core.model import Row
from backfill.core.ports import Catalog
from backfill.settings import BackfillSettings, CatalogSettings, NatsSettings, SettingsBundle
from backfill.wiring import connect_bus, http_client, open_catalog
from producer.evidence import diff, format_diff, listen, snapshot
from producer.progress import Progress
from producer.shell import Command, add_json, emit, needs

ID_CHUNK = 1000


def listen_arguments(hear: argparse.ArgumentParser) -> None:
    hear.add_argument(
        "--topics",
        nargs="+",
        default=["content.published.v1"],
        help="subjects to print (default: %(default)s)",
    )
    hear.add_argument("--max", type=int, dest="max_messages", help="stop after this many")
    hear.add_argument("--timeout", type=float, help="stop after this many seconds")
    hear.add_argument("--compact", action="store_true", help="one line per envelope")


def snapshot_arguments(snap: argparse.ArgumentParser) -> None:
    snap.add_argument("--out", type=Path, required=True, help="the JSON-lines file to write")
    snap.add_argument(
        "--ids-from", type=Path, help="snapshot the rows of an earlier snapshot instead (the 'after')"
    )
    add_json(snap, "what was written")


def diff_arguments(compare: argparse.ArgumentParser) -> None:
    compare.add_argument("before", type=Path, help="the snapshot taken before the run")
    compare.add_argument("after", type=Path, help="the snapshot taken after it (--ids-from the first)")
    add_json(compare, "the differences")


def ids_in(path: Path) -> list[int]:
    with path.open() as lines:
        return [int(json.loads(line)["id"]) for line in lines if line.strip()]


async def rows_by_id(catalog: Catalog, ids: list[int]) -> AsyncIterator[list[Row]]:
    for start in range(0, len(ids), ID_CHUNK):
        yield sorted(await catalog.fetch_rows(ids[start : start + ID_CHUNK]), key=lambda r: r.id)


async def run_listen(settings: SettingsBundle, args: argparse.Namespace) -> int:
    bus = await connect_bus(settings, "backfill-producer listen", reconnect_forever=True)
    try:
        await listen(bus.nc, args.topics, args.max_messages, args.compact, sys.stdout, args.timeout)
    finally:
        await bus.close()
    return 0


async def run_snapshot(settings: SettingsBundle, args: argparse.Namespace) -> int:
    http = http_client(settings)
    try:
        async with open_catalog(settings, http) as catalog:
            if args.ids_from:
                ids = ids_in(args.ids_from)
                written = await snapshot(rows_by_id(catalog, ids), args.out, Progress("snapshot", len(ids)))
            else:
                total = await catalog.count_candidates()
                written = await snapshot(catalog.stream_candidates(), args.out, Progress("snapshot", total))
    finally:
        await http.aclose()
    emit(args, {"rows": written, "out": str(args.out)}, f"wrote {written} rows to {args.out}")
    return 0


async def run_diff(_settings: SettingsBundle, args: argparse.Namespace) -> int:
    try:
        report = diff(args.before, args.after)
    except FileNotFoundError as exc:
        raise NotFound(f"no snapshot at {exc.filename}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"not a snapshot written by `producer snapshot`: {exc}") from exc
    print(format_diff(report, args.json))
    return 0


LISTEN = Command(
    listen_arguments,
    run_listen,
    needs(NatsSettings, BackfillSettings),
    {"listen": "producer listen --topics content.published.v1 --max 5 --compact"},
)
SNAPSHOT = Command(
    snapshot_arguments,
    run_snapshot,
    needs(CatalogSettings, BackfillSettings),
    {
        "snapshot": "producer snapshot --out before.jsonl\n"
        "producer snapshot --out after.jsonl --ids-from before.jsonl"
    },
)
DIFF = Command(
    diff_arguments,
    run_diff,
    needs(BackfillSettings),
    {"diff": "producer diff before.jsonl after.jsonl\nproducer diff before.jsonl after.jsonl --json"},
)
