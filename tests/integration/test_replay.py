"""Dead-letter replay against a real nats-server: what is removed, what is kept, and how.

`--all` / `--reason` remove the replayed prefix with a purge; past the first dead letter kept, and for
`--seq` / `--ids`, each replayed dead letter is deleted on its own. Nothing that was not replayed (row
already pending, undecodable body, another reason, not selected) ever leaves the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from backfill.adapters.jetstream.bus import AckPublisher, PubStatus
from backfill.adapters.jetstream.layout import Layout, build_layout, ensure_layout
from backfill.core.deadletter import Failure, dead_letter_headers
from backfill.core.wire import (
    Header,
    Mode,
    YoutubeLinking,
    decode_request,
    dlq_subject,
    encode_request,
    msg_id,
    new_request,
    request_subject,
)
from backfill.settings import NatsSettings
from producer.commands.dlq import _replay

STAMP = datetime(2026, 11, 30, tzinfo=UTC).isoformat()


@pytest.fixture
async def layout(nc: NatsClient, layout_env: dict[str, str]) -> Layout:
    settings = NatsSettings.model_validate(layout_env)
    built = build_layout(settings)
    await ensure_layout(nc.jetstream(), built)
    return built


async def dead_letter(
    nc: NatsClient, layout: Layout, row_id: int, reason: str, body: bytes | None = None
) -> int:
    original = request_subject(layout.prefix, row_id)
    failure = Failure(reason, "why", original, layout.stream, row_id, 3, STAMP, STAMP, "w1", "v", row_id)
    data = body if body is not None else encode_request(new_request(row_id, "v", Mode.REPUBLISH, "run-1"))
    headers = dead_letter_headers(failure, {Header.MSG_ID: msg_id(row_id, "run-1")})
    result = await AckPublisher(nc).publish(dlq_subject(layout.prefix, reason), data, headers)
    assert result.status is PubStatus.STORED and result.seq is not None
    return result.seq


async def remaining(js: JetStreamContext, layout: Layout) -> set[int]:
    """Stream sequences still in the dead-letter stream."""
    info = await js.stream_info(layout.dlq_stream)
    seqs: set[int] = set()
    seq = info.state.first_seq
    while seq and seq <= info.state.last_seq:
        try:
            msg = await js.get_msg(layout.dlq_stream, seq)
        except nats.js.errors.NotFoundError:
            seq += 1
            continue
        seqs.add(int(msg.seq or seq))
        seq += 1
    return seqs


def replay_args(**selection: object) -> argparse.Namespace:
    values = {"all": False, "reason": None, "seq": None, "ids": None, "dry_run": False, "json": True}
    return argparse.Namespace(**{**values, **selection})


async def run_replay(
    nc: NatsClient, layout: Layout, capsys: pytest.CaptureFixture[str], **selection: object
) -> dict[str, object]:
    code = await _replay(nc, layout, replay_args(**selection), "replay-test")
    summary: dict[str, object] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == (1 if summary["failed"] else 0)
    return summary


async def test_all_purges_the_replayed_prefix_and_keeps_what_was_not_replayed(
    nc: NatsClient, layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the first kept dead letter: one purge; after it: one delete each; kept ones stay."""
    js = nc.jetstream()
    first = [await dead_letter(nc, layout, row, "jellyfin_not_found") for row in (1, 2, 3)]
    pending_row = await dead_letter(nc, layout, 4, "ambiguous_match")
    garbage = await dead_letter(nc, layout, 5, "invalid_message", body=b"\xff not json")
    later = [await dead_letter(nc, layout, row, "retries_exhausted") for row in (6, 7)]
    # row 4 already waits in the work stream: its replay is refused, its dead letter must stay
    await AckPublisher(nc).publish(request_subject(layout.prefix, 4), b"{}", {Header.MSG_ID: "other"})

    summary = await run_replay(nc, layout, capsys, all=True)

    assert (summary["replayed"], summary["skipped"], summary["failed"]) == (5, 2, 0)
    assert summary["total"] == 7  # known before the first read, from the per-subject counts
    assert await remaining(js, layout) == {pending_row, garbage}
    work = await js.stream_info(layout.stream)
    assert work.state.messages == 6  # rows 1-3, 6, 7 re-enqueued, plus the one already pending
    assert not set(first + later) & await remaining(js, layout)


async def test_reason_removes_only_that_reason_even_when_interleaved(
    nc: NatsClient, layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    """The purge is filtered by the reason's subject: other reasons below it are untouched."""
    js = nc.jetstream()
    kept = []
    for row in range(1, 9):
        reason = "jellyfin_not_found" if row % 2 else "upstream_rejected"
        seq = await dead_letter(nc, layout, row, reason)
        if reason == "upstream_rejected":
            kept.append(seq)

    summary = await run_replay(nc, layout, capsys, reason="jellyfin_not_found")

    assert summary["replayed"] == summary["total"] == 4
    assert await remaining(js, layout) == set(kept)


async def test_seq_selection_deletes_only_the_selected_dead_letters(
    nc: NatsClient, layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--seq` never purges: the dead letters around the chosen ones stay."""
    js = nc.jetstream()
    seqs = [await dead_letter(nc, layout, row, "jellyfin_not_found") for row in range(1, 6)]

    summary = await run_replay(nc, layout, capsys, seq=[seqs[1], seqs[3]])

    assert summary["replayed"] == summary["total"] == 2
    assert await remaining(js, layout) == {seqs[0], seqs[2], seqs[4]}


async def test_replay_of_many_uses_batches_and_leaves_nothing_behind(
    nc: NatsClient, layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    """More dead letters than one publish batch (512): every one replayed and removed."""
    js = nc.jetstream()
    publisher = AckPublisher(nc)
    futures = []
    for row in range(1, 1301):
        original = request_subject(layout.prefix, row)
        failure = Failure(
            "jellyfin_not_found", "x", original, layout.stream, row, 1, STAMP, STAMP, "w", "v", row
        )
        body = encode_request(new_request(row, "v", Mode.REPUBLISH, "run-1"))
        headers = dead_letter_headers(failure, None)
        futures.append(
            await publisher.submit(dlq_subject(layout.prefix, "jellyfin_not_found"), body, headers)
        )
    assert all(result.status is PubStatus.STORED for result in await asyncio.gather(*futures))

    summary = await run_replay(nc, layout, capsys, all=True)

    assert summary["replayed"] == 1300
    assert (await js.stream_info(layout.dlq_stream)).state.messages == 0
    assert (await js.stream_info(layout.stream)).state.messages == 1300


async def test_reading_stops_at_the_last_dead_letter_present_when_it_started(
    nc: NatsClient, layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dead letters added while a replay reads (its own rows failing again) are left for the next run."""
    from backfill.adapters.jetstream import deadletters as dlq
    from backfill.adapters.jetstream.deadletters import read_dead_letters

    monkeypatch.setattr(dlq, "FETCH_BATCH", 1)  # one pull per dead letter: new ones arrive between pulls

    present = [await dead_letter(nc, layout, row_id, "jellyfin_not_found") for row_id in (1, 2, 3)]
    seen = []
    async for record in read_dead_letters(nc.jetstream(), layout):
        seen.append(record.seq)
        if len(seen) == 1:
            for row_id in (4, 5):
                await dead_letter(nc, layout, row_id, "jellyfin_not_found")
    assert seen == present


def test_reason_arguments_are_checked_against_the_known_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    """`--reason '>'` once purged every dead letter (a wildcard in the subject filter)."""
    from producer.commands.dlq import dlq_arguments

    parser = argparse.ArgumentParser()
    dlq_arguments(parser.add_subparsers(dest="command").add_parser("dlq"))
    for command in (["purge", "--yes"], ["replay"], ["list"]):
        for bad in (">", "*", "jellyfin_not_found.>", "nope"):
            with pytest.raises(SystemExit) as exited:
                parser.parse_args(["dlq", *command, "--reason", bad])
            assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert (
        parser.parse_args(["dlq", "purge", "--reason", "ambiguous_match", "--yes"]).reason
        == "ambiguous_match"
    )


async def test_replay_keeps_the_youtube_linking_the_run_asked_for(
    nc: NatsClient, layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dead letter of a `--link-youtube` run is re-enqueued still asking for the links (same threshold
    and limit); one without linking stays without."""
    js = nc.jetstream()
    linking = YoutubeLinking(threshold=0.8, limit=4)
    linked = encode_request(new_request(1, "v", Mode.REPUBLISH, "run-1", youtube=linking))
    await dead_letter(nc, layout, 1, "jellyfin_not_found", body=linked)
    await dead_letter(nc, layout, 2, "jellyfin_not_found")

    summary = await run_replay(nc, layout, capsys, all=True)

    assert summary["replayed"] == 2
    requests = {}
    for row_id in (1, 2):
        msg = await js.get_last_msg(layout.stream, request_subject(layout.prefix, row_id))
        requests[row_id] = decode_request(msg.data, msg.subject, layout.prefix)
    assert requests[1].youtube == linking and requests[1].run_id != "run-1"
    assert requests[2].youtube is None
