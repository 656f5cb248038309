"""Evidence for the runbook: a realtime listener, a snapshot of rows' meta and a diff of two snapshots.

- `listen` prints the envelopes that pass on core NATS subjects (start it before publishing);
- `snapshot` streams `{"id", "meta"}` JSON lines of the rows it is fed, memory flat;
- `diff` compares two snapshots row by row (keys added, changed, removed; totals); `format_diff`
  renders the report as text or JSON. `diff` and `format_diff` are pure.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgspec

from backfill.adapters.jetstream.bus import Connection
from backfill.adapters.jetstream.listen import subscribe
from backfill.core.errors import BackfillError
from backfill.core.model import Row
from producer.progress import Progress

log = logging.getLogger("producer")
VALUE_WIDTH = 80
_encoder = msgspec.json.Encoder(order="sorted")


class SnapshotFileError(BackfillError):
    """A snapshot file has a line that is not `{"id": <int>, "meta": <object or null>}`: not retryable."""


# --- listen ---------------------------------------------------------------------------------------


def format_envelope(subject: str, data: bytes, compact: bool) -> str:
    """One envelope as printed by `listen`: a compact line or pretty JSON; undecodable data raw."""
    try:
        envelope = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{subject} (invalid JSON: {exc}) {data[:1000]!r}"
    if not isinstance(envelope, dict):
        return f"{subject} (not an envelope object) {data[:1000]!r}"
    if not compact:
        return json.dumps(envelope, indent=2, ensure_ascii=False)
    payload = envelope.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    fields = [
        envelope.get("ts"),
        envelope.get("topic") or subject,
        envelope.get("id"),
        envelope.get("correlation_id"),
    ]
    title = payload.get("title")
    shown = [str(f) if f not in (None, "") else "-" for f in fields]
    shown.append(json.dumps(title, ensure_ascii=False) if title else "-")
    shown.append(str(payload.get("jellyfin_item_id") or "-"))
    return " ".join(shown)


async def listen(
    nc: Connection,
    topics: list[str],
    max_messages: int | None,
    compact: bool,
    out: TextIO,
    timeout: float | None = None,  # noqa: ASYNC109 - the CLI's --timeout, applied with asyncio.timeout
    *,
    ready: asyncio.Event | None = None,
) -> int:
    """Print each message on `topics` (core NATS) until `max_messages` or `timeout`; return the count.

    `ready` is set once the server has registered every subscription: publish after that.
    """
    heard: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    subscriptions = await subscribe(
        nc, topics, lambda subject, data, _headers: heard.put_nowait((subject, data))
    )
    log.info("listening on %s", ", ".join(topics))
    if ready is not None:
        ready.set()
    count = 0
    try:
        async with asyncio.timeout(timeout):
            while max_messages is None or count < max_messages:
                subject, data = await heard.get()
                out.write(format_envelope(subject, data, compact) + "\n")
                out.flush()
                count += 1
    except TimeoutError:
        log.info("listen: %d message(s) before the %.0f s timeout", count, timeout or 0)
    finally:
        await subscriptions.stop()
    return count


# --- snapshot -------------------------------------------------------------------------------------


async def snapshot(rows: AsyncIterator[list[Row]], out_path: Path, progress: Progress) -> int:
    """Write one `{"id", "meta"}` JSON line per row, page by page; return the number of rows.

    The file appears under `out_path` only when complete, so an interrupted snapshot never passes
    for a whole one.
    """
    partial = out_path.with_name(out_path.name + ".partial")
    count = 0
    with partial.open("wb") as fh:
        async for page in rows:
            for row in page:
                fh.write(_encoder.encode({"id": row.id, "meta": row.meta}) + b"\n")
            count += len(page)
            progress.advance(len(page))
    partial.replace(out_path)
    progress.finish()
    return count


# --- diff -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowDiff:
    """How one row's meta changed; values are compact JSON, truncated to `VALUE_WIDTH`."""

    id: int
    added: dict[str, str]
    changed: dict[str, tuple[str, str]]
    removed: dict[str, str]


@dataclass
class DiffReport:
    rows: list[RowDiff] = field(default_factory=list)
    rows_compared: int = 0
    only_before: list[int] = field(default_factory=list)
    only_after: list[int] = field(default_factory=list)
    keys_added: Counter[str] = field(default_factory=Counter)
    keys_changed: Counter[str] = field(default_factory=Counter)
    keys_removed: Counter[str] = field(default_factory=Counter)

    @property
    def rows_changed(self) -> int:
        return len(self.rows)


def _shown(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def diff_meta(row_id: int, old: dict[str, Any], new: dict[str, Any]) -> RowDiff | None:
    """The difference between two meta objects of one row; None when they are equal."""
    added = {k: _shown(v) for k, v in new.items() if k not in old}
    removed = {k: _shown(v) for k, v in old.items() if k not in new}
    changed = {k: (_shown(old[k]), _shown(v)) for k, v in new.items() if k in old and old[k] != v}
    if not (added or removed or changed):
        return None
    return RowDiff(row_id, added, changed, removed)


def _read_snapshot(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                row_id, meta = record["id"], record.get("meta")
            except (ValueError, TypeError, KeyError) as exc:
                raise SnapshotFileError(f"{path}:{number}: not a snapshot line ({exc})") from exc
            if not isinstance(row_id, int) or not (meta is None or isinstance(meta, dict)):
                raise SnapshotFileError(f"{path}:{number}: expected an integer id and an object meta")
            yield row_id, meta or {}


def diff(before: Path, after: Path) -> DiffReport:
    """Compare two snapshots: `after` is held as id -> meta, `before` is streamed line by line."""
    remaining = dict(_read_snapshot(after))
    report = DiffReport()
    for row_id, old in _read_snapshot(before):
        if row_id not in remaining:
            report.only_before.append(row_id)
            continue
        report.rows_compared += 1
        row = diff_meta(row_id, old, remaining.pop(row_id))
        if row is not None:
            report.rows.append(row)
            report.keys_added.update(row.added.keys())
            report.keys_changed.update(row.changed.keys())
            report.keys_removed.update(row.removed.keys())
    report.only_after = sorted(remaining)
    return report


def _report_json(report: DiffReport) -> dict[str, Any]:
    return {
        "rows": [
            {
                "id": row.id,
                "added": row.added,
                "changed": {k: {"old": old, "new": new} for k, (old, new) in row.changed.items()},
                "removed": row.removed,
            }
            for row in report.rows
        ],
        "totals": {
            "rows_compared": report.rows_compared,
            "rows_changed": report.rows_changed,
            "rows_only_before": len(report.only_before),
            "rows_only_after": len(report.only_after),
            "keys_added": dict(report.keys_added.most_common()),
            "keys_changed": dict(report.keys_changed.most_common()),
            "keys_removed": dict(report.keys_removed.most_common()),
        },
        "only_before": report.only_before,
        "only_after": report.only_after,
    }


def _row_line(row: RowDiff) -> str:
    parts = [f"+{k}={v}" for k, v in row.added.items()]
    parts += [f"~{k}: {old} -> {new}" for k, (old, new) in row.changed.items()]
    parts += [f"-{k}" for k in row.removed]
    return f"row {row.id}: " + "  ".join(parts)


def _ids(ids: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return f" ({shown}{', ...' if len(ids) > limit else ''})" if ids else ""


def _counts(label: str, counts: Counter[str]) -> list[str]:
    if not counts:
        return []
    return [f"{label}: " + ", ".join(f"{k}={n}" for k, n in counts.most_common())]


def format_diff(report: DiffReport, json_output: bool) -> str:
    """The report as indented JSON, or one line per changed row followed by the totals."""
    if json_output:
        return json.dumps(_report_json(report), indent=2, ensure_ascii=False)
    lines = [_row_line(row) for row in report.rows]
    unchanged = report.rows_compared - report.rows_changed
    lines.append(
        f"rows compared: {report.rows_compared}, changed: {report.rows_changed}, unchanged: {unchanged}"
    )
    lines.append(f"rows only in before: {len(report.only_before)}{_ids(report.only_before)}")
    lines.append(f"rows only in after: {len(report.only_after)}{_ids(report.only_after)}")
    lines += _counts("keys added", report.keys_added)
    lines += _counts("keys changed", report.keys_changed)
    lines += _counts("keys removed", report.keys_removed)
    return "\n".join(lines)
