"""Runbook evidence: the realtime listener on a real nats-server, snapshot and diff on files (the run
log has its own module, `test_run_log`)."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from backfill.adapters.jetstream.bus import connect
from backfill.core.model import Row
from backfill_doubles.agent_zero import build_envelope
from producer.evidence import SnapshotFileError, diff, format_diff, listen, snapshot
from producer.progress import Progress

# --- listen ---------------------------------------------------------------------------------------


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await connect(nats_url, "test-evidence", reconnect_forever=False)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def topic() -> str:
    return f"t{uuid.uuid4().hex[:10]}.content.published.v1"


def envelope(topic: str, n: int) -> dict[str, Any]:
    payload = {"title": f"Episode {n}", "jellyfin_item_id": f"{n:032x}", "namespace": "pmoves"}
    return build_envelope({"topic": topic, "payload": payload, "correlation_id": f"cid-{n}"})


async def run_listener(
    nc: NatsClient, topic: str, messages: list[bytes], *, max_messages: int | None, compact: bool
) -> tuple[int, str]:
    """Start `listen`, publish `messages` once it is subscribed, and wait for it to return by itself."""
    out, ready = io.StringIO(), asyncio.Event()
    task = asyncio.create_task(listen(nc, [topic], max_messages, compact, out, timeout=10, ready=ready))
    await asyncio.wait_for(ready.wait(), 5)
    for data in messages:
        await nc.publish(topic, data)
    await nc.flush()
    count = await asyncio.wait_for(task, 15)
    return count, out.getvalue()


def json_documents(text: str) -> list[Any]:
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while pos < len(text.rstrip()):
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


async def test_listen_prints_envelopes_as_json_and_stops_after_max(nc: NatsClient, topic: str) -> None:
    """With --max 3, five published envelopes give three pretty JSON envelopes and a return of 3."""
    sent = [envelope(topic, n) for n in range(5)]
    count, printed = await run_listener(
        nc, topic, [json.dumps(e).encode() for e in sent], max_messages=3, compact=False
    )
    assert count == 3
    assert json_documents(printed) == sent[:3]
    assert "\n  " in printed  # indented, for a reader


async def test_listen_compact_prints_one_line_per_envelope(nc: NatsClient, topic: str) -> None:
    """Compact mode prints `ts topic id correlation_id "title" jellyfin_item_id` on one line each."""
    sent = [envelope(topic, n) for n in range(2)]
    _, printed = await run_listener(
        nc, topic, [json.dumps(e).encode() for e in sent], max_messages=2, compact=True
    )
    expected = [
        f'{e["ts"]} {topic} {e["id"]} {e["correlation_id"]} "{e["payload"]["title"]}" '
        f"{e['payload']['jellyfin_item_id']}"
        for e in sent
    ]
    assert printed.splitlines() == expected


async def test_listen_prints_invalid_json_raw_and_keeps_listening(nc: NatsClient, topic: str) -> None:
    """A message that is not JSON is printed raw with a note, and the next envelope still prints."""
    good = envelope(topic, 1)
    count, printed = await run_listener(
        nc, topic, [b"not json {", json.dumps(good).encode()], max_messages=2, compact=True
    )
    first, second = printed.splitlines()
    assert count == 2
    assert "invalid JSON" in first
    assert "not json {" in first
    assert good["id"] in second


async def test_listen_returns_what_it_saw_when_the_timeout_passes(nc: NatsClient, topic: str) -> None:
    """Without enough messages, listen returns at the timeout with the count so far."""
    out = io.StringIO()
    count = await asyncio.wait_for(listen(nc, [topic], 5, True, out, timeout=0.2), 10)
    assert count == 0
    assert out.getvalue() == ""


# --- snapshot and diff ----------------------------------------------------------------------------


async def pages(*batches: list[Row]) -> AsyncIterator[list[Row]]:
    for batch in batches:
        yield batch


def write_snapshot(path: Path, rows: dict[int, dict[str, Any] | None]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "meta": m}) + "\n" for i, m in rows.items()))
    return path


async def test_snapshot_writes_one_id_and_meta_line_per_row(tmp_path: Path) -> None:
    """Every row of every page becomes a `{"id", "meta"}` line; the count and the progress agree."""
    rows = [Row(id=1, title="a", meta={"slug": "a"}), Row(id=2, meta=None), Row(id=3, meta={})]
    progress = Progress("snapshot", None, stream=io.StringIO())
    out = tmp_path / "before.jsonl"
    count = await snapshot(pages(rows[:2], rows[2:]), out, progress)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert count == progress.done == 3
    assert lines == [{"id": 1, "meta": {"slug": "a"}}, {"id": 2, "meta": None}, {"id": 3, "meta": {}}]
    assert not list(tmp_path.glob("*.partial"))


async def test_snapshot_then_diff_reports_added_changed_and_removed_keys(tmp_path: Path) -> None:
    """Snapshots before and after a backfill diff to per-row key changes and per-key totals."""
    before_rows = [
        Row(id=1, meta={"slug": "a", "title": "old"}),
        Row(id=2, meta=None),
        Row(id=3, meta={"slug": "c"}),
    ]
    after_rows = [
        Row(id=1, meta={"title": "new", "jellyfin_public_url": "https://watch/1"}),
        Row(id=2, meta={"jellyfin_public_url": "https://watch/2"}),
        Row(id=3, meta={"slug": "c"}),
    ]
    quiet = io.StringIO()
    await snapshot(pages(before_rows), tmp_path / "b.jsonl", Progress("s", None, stream=quiet))
    await snapshot(pages(after_rows), tmp_path / "a.jsonl", Progress("s", None, stream=quiet))
    report = diff(tmp_path / "b.jsonl", tmp_path / "a.jsonl")
    row1, row2 = report.rows
    assert (row1.id, row1.added, row1.changed, row1.removed) == (
        1,
        {"jellyfin_public_url": '"https://watch/1"'},
        {"title": ('"old"', '"new"')},
        {"slug": '"a"'},
    )
    assert (row2.id, row2.added) == (2, {"jellyfin_public_url": '"https://watch/2"'})
    assert (report.rows_compared, report.rows_changed) == (3, 2)
    assert report.keys_added == {"jellyfin_public_url": 2}
    assert (report.keys_changed, report.keys_removed) == ({"title": 1}, {"slug": 1})


def test_diff_counts_rows_found_on_one_side_only(tmp_path: Path) -> None:
    """Rows missing from one snapshot are listed and counted apart, never compared."""
    before = write_snapshot(tmp_path / "b.jsonl", {1: {}, 2: {"k": 1}, 5: None})
    after = write_snapshot(tmp_path / "a.jsonl", {2: {"k": 1}, 7: {}, 6: {"x": 1}})
    report = diff(before, after)
    assert (report.only_before, report.only_after) == ([1, 5], [6, 7])
    assert (report.rows_compared, report.rows_changed) == (1, 0)


def test_diff_truncates_long_values(tmp_path: Path) -> None:
    """A long value is shown cut to 80 characters, ending with an ellipsis."""
    before = write_snapshot(tmp_path / "b.jsonl", {1: {"d": "x"}})
    after = write_snapshot(tmp_path / "a.jsonl", {1: {"d": "y" * 500}})
    (row,) = diff(before, after).rows
    old, new = row.changed["d"]
    assert old == '"x"'
    assert len(new) == 80
    assert new.endswith("…")


def test_format_diff_text_lists_rows_then_totals(tmp_path: Path) -> None:
    """The text report has one line per changed row and the totals, including one-sided rows."""
    before = write_snapshot(tmp_path / "b.jsonl", {1: {"slug": "a"}, 2: {}})
    after = write_snapshot(tmp_path / "a.jsonl", {1: {"slug": "a", "url": "u"}, 3: {}})
    text = format_diff(diff(before, after), json_output=False)
    assert text.splitlines() == [
        'row 1: +url="u"',
        "rows compared: 1, changed: 1, unchanged: 0",
        "rows only in before: 1 (2)",
        "rows only in after: 1 (3)",
        "keys added: url=1",
    ]


def test_format_diff_json_carries_rows_and_totals(tmp_path: Path) -> None:
    """The JSON report parses and holds each changed row and the totals."""
    before = write_snapshot(tmp_path / "b.jsonl", {1: {"t": 1}})
    after = write_snapshot(tmp_path / "a.jsonl", {1: {"t": 2}, 2: {}})
    data = json.loads(format_diff(diff(before, after), json_output=True))
    assert data["rows"] == [{"id": 1, "added": {}, "changed": {"t": {"old": "1", "new": "2"}}, "removed": {}}]
    assert data["totals"]["rows_changed"] == 1
    assert data["totals"]["rows_only_after"] == 1


def test_diff_names_the_file_and_line_of_a_malformed_snapshot(tmp_path: Path) -> None:
    """A line that is not a snapshot record raises SnapshotFileError naming file and line."""
    good = write_snapshot(tmp_path / "a.jsonl", {1: {}})
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"id": 1, "meta": {}}\n{"meta": {}}\n')
    with pytest.raises(SnapshotFileError, match=r"b\.jsonl:2"):
        diff(bad, good)
