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
from backfill.settings import SettingsBundle
from backfill.wiring import connect_bus, http_client, open_catalog
from producer.evidence import diff, format_diff, listen, snapshot
from producer.progress import Progress
from producer.shell import add_json, emit

ID_CHUNK = 1000


def add_evidence_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hear = commands.add_parser(
        "listen", help="print envelopes as they pass on core NATS (start before publishing)"
    )
    hear.add_argument(
        "--topics",
        nargs="+",
        default=["content.published.v1"],
        help="subjects to print (default: %(default)s)",
    )
    hear.add_argument("--max", type=int, dest="max_messages", help="stop after this many")
    hear.add_argument("--timeout", type=float, help="stop after this many seconds")
    hear.add_argument("--compact", action="store_true", help="one line per envelope")
    snap = commands.add_parser("snapshot", help="id and meta of the candidate rows, as JSON lines")
    snap.add_argument("--out", type=Path, required=True, help="the JSON-lines file to write")
    snap.add_argument(
        "--ids-from", type=Path, help="snapshot the rows of an earlier snapshot instead (the 'after')"
    )
    compare = commands.add_parser("diff", help="per row, meta keys added and changed between two snapshots")
    compare.add_argument("before", type=Path, help="the snapshot taken before the run")
    compare.add_argument("after", type=Path, help="the snapshot taken after it (--ids-from the first)")
    add_json(compare, "the differences")
    add_json(snap, "what was written")


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
