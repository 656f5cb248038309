"""The dead-letter index on a real nats-server: which rows have a dead letter, read from headers only;
after the first read only what was added is read, and everything again only when something in the middle
was removed (a replay or a purge by someone else)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from backfill.adapters.jetstream import deadletters
from backfill.adapters.jetstream.bus import remove_message
from backfill.adapters.jetstream.deadletters import purge_dead_letters, refresh_index
from backfill.adapters.jetstream.layout import Layout, build_layout, ensure_layout
from backfill.core.deadletter import DeadLetterIndex
from backfill.settings import NatsSettings
from tests.integration.test_replay import dead_letter


@pytest.fixture
async def layout(nc: NatsClient, layout_env: dict[str, str]) -> Layout:
    built = build_layout(NatsSettings.model_validate(layout_env))
    await ensure_layout(nc.jetstream(), built)
    return built


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every read of the dead-letter stream the index makes, with its options."""
    made: list[dict[str, Any]] = []
    original = deadletters.read_dead_letters

    def counted(*args: Any, **options: Any) -> AsyncIterator[Any]:
        made.append(options)
        return original(*args, **options)

    monkeypatch.setattr(deadletters, "read_dead_letters", counted)
    return made


async def test_the_first_refresh_reads_every_dead_letter_from_its_headers(
    nc: NatsClient,
    layout: Layout,
    reads: list[dict[str, Any]],
) -> None:
    seqs = [
        await dead_letter(nc, layout, row, reason)
        for row, reason in [(7, "ambiguous_match"), (9, "jellyfin_not_found")]
    ]
    index = DeadLetterIndex()
    await refresh_index(nc.jetstream(), layout, index)
    assert [(e.seq, e.row_id, e.reason) for e in index.entries()] == [
        (seqs[0], 7, "ambiguous_match"),
        (seqs[1], 9, "jellyfin_not_found"),
    ]
    assert all(e.stored_at is not None and e.auto_replays == 0 for e in index.entries())
    assert reads == [{"start_seq": 1, "headers_only": True}]


async def test_with_nothing_new_a_refresh_reads_nothing_and_then_only_what_was_added(
    nc: NatsClient,
    layout: Layout,
    reads: list[dict[str, Any]],
) -> None:
    await dead_letter(nc, layout, 7, "ambiguous_match")
    index = DeadLetterIndex()
    await refresh_index(nc.jetstream(), layout, index)
    await refresh_index(nc.jetstream(), layout, index)
    assert len(reads) == 1  # the second refresh only asked the stream's state
    added = await dead_letter(nc, layout, 8, "jellyfin_not_found")
    await refresh_index(nc.jetstream(), layout, index)
    assert reads[-1] == {"start_seq": added, "headers_only": True}
    latest = index.latest(8)
    assert latest is not None and latest.seq == added


async def test_a_dead_letter_removed_in_the_middle_is_forgotten_by_a_full_read(
    nc: NatsClient,
    layout: Layout,
    reads: list[dict[str, Any]],
) -> None:
    seqs = [await dead_letter(nc, layout, row, "jellyfin_not_found") for row in (1, 2, 3)]
    index = DeadLetterIndex()
    await refresh_index(nc.jetstream(), layout, index)
    assert await remove_message(nc.jetstream(), layout.dlq_stream, seqs[1])  # replayed by an operator
    await refresh_index(nc.jetstream(), layout, index)
    assert index.latest(2) is None and index.latest(1) is not None and index.latest(3) is not None
    assert reads[-1] == {"headers_only": True}
    await dead_letter(nc, layout, 4, "ambiguous_match")
    assert await purge_dead_letters(nc.jetstream(), layout, "jellyfin_not_found") == 2
    await refresh_index(nc.jetstream(), layout, index)
    assert [e.row_id for e in index.entries()] == [4]


async def test_no_dead_letter_stream_is_an_empty_index(nc: NatsClient) -> None:
    missing = build_layout(NatsSettings.model_validate({"BACKFILL_DLQ_STREAM": "NO_SUCH_DLQ"}))
    index = DeadLetterIndex()
    await refresh_index(nc.jetstream(), missing, index)
    assert len(index) == 0
