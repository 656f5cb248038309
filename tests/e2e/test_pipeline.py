"""The installed `producer` and two `worker` processes against the embedded stack, every path at once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from backfill.core.payload import correlation_id
from backfill_doubles.stack import ORIGINAL_SENT_AT, PUBLIC_BASE, EmbeddedStack
from tests.e2e.conftest import Envelopes, Ran, run_cli
from tests.e2e.processes import read_stream

pytestmark = pytest.mark.slow
VERSION = "2025-10-14"


async def run_backfill(
    stack: EmbeddedStack, env: dict[str, str], *enqueue_args: str
) -> tuple[Ran, list[Ran]]:
    full_env = stack.env(**env)
    enqueued = await run_cli("producer", ["enqueue", "--all-missing", "--json", *enqueue_args], full_env)
    assert enqueued.code == 0, enqueued.stderr
    workers = [
        run_cli("worker", ["--exit-when-idle", "2", "--metrics-port", "0", "--concurrency", "8"], full_env)
        for _ in range(2)
    ]
    done = list(await asyncio.gather(*workers))
    assert [w.code for w in done] == [0] * len(done), "\n---\n".join(w.stderr[-3000:] for w in done)
    return enqueued, done


def assert_enriched(stack: EmbeddedStack, row_id: int, envelope_ids: set[str] | None) -> None:
    seed_row = stack.rows[row_id]
    meta = stack.catalog.rows[row_id]["meta"]
    original = stack.originals[row_id]["meta"]
    item_id = stack.item_ids[seed_row.item_key or ""]
    item = stack.jellyfin.items[item_id]
    assert meta["jellyfin_item_id"] == item_id
    assert (
        meta["jellyfin_public_url"] == f"{PUBLIC_BASE}/web/#/details?id={item_id}&serverId={item['ServerId']}"
    )
    assert meta["duration"] == round(item["RunTimeTicks"] / 10_000_000, 3)
    assert meta["backfill_version"] == VERSION
    assert meta["publish_event_sent_at"] == ORIGINAL_SENT_AT  # filled only when missing: never overwritten
    for key, value in original.items():
        if key not in ("jellyfin_item_id",):
            assert meta[key] == value, f"row {row_id}: key {key} changed"
    if seed_row.thumbnail == "jellyfin":
        assert meta["thumbnail_url"].startswith(f"{PUBLIC_BASE}/Items/{item_id}/Images/Primary?tag=")
    elif seed_row.thumbnail == "storage":
        assert meta["thumbnail_url"].startswith("https://media.example.org/outputs/")
    else:
        assert "thumbnail_url" not in meta
    if envelope_ids is None:
        assert "backfill_event_id" not in meta
    else:
        assert meta["backfill_event_id"] in envelope_ids


async def test_republish_enriches_every_resolvable_row_once_and_dead_letters_the_rest(
    stack: EmbeddedStack, envelopes: Envelopes, layout_env: dict[str, str], schemas: dict
) -> None:
    """One valid envelope per republished row, rows enriched with keys kept, the rest dead-lettered or untouched."""
    enqueued, workers = await run_backfill(stack, layout_env)
    summary = enqueued.json_lines()[-1]
    candidates = [rid for rid, r in stack.rows.items() if r.expect != "untouched"]
    assert summary["enqueued"] == len(candidates)
    assert summary["failed"] == 0
    assert [w.code for w in workers] == [0, 0], [w.stderr[-2000:] for w in workers]

    republished = [rid for rid, r in stack.rows.items() if r.expect == "republished"]
    by_row = envelopes.by_row()
    envelope_ids = {e["id"] for e in envelopes.seen}
    assert len(envelopes.seen) == len(republished)
    for row_id in republished:
        (envelope,) = by_row[correlation_id(row_id, VERSION)]
        assert schemas["envelope"].is_valid(envelope)
        assert schemas["payload"].is_valid(envelope["payload"])
        assert "backfill" in envelope["payload"]["tags"]
        assert envelope["source"] == "backfill"
        assert_enriched(stack, row_id, envelope_ids)

    for row_id, seed_row in stack.rows.items():
        if seed_row.expect == "untouched" or seed_row.expect.startswith("dlq:"):
            assert stack.catalog.rows[row_id]["meta"] == stack.originals[row_id]["meta"], (
                f"row {row_id} changed"
            )

    dead = await read_stream(stack.nats_url, layout_env["BACKFILL_DLQ_STREAM"])
    reasons = {int(m.headers["Backfill-Row-Id"]): m.headers["Backfill-Reason"] for m in dead}
    expected = {
        rid: r.expect.removeprefix("dlq:") for rid, r in stack.rows.items() if r.expect.startswith("dlq:")
    }
    assert reasons == expected
    assert len(dead) == len(expected)
    assert await read_stream(stack.nats_url, layout_env["BACKFILL_STREAM"]) == []


async def test_metadata_only_updates_rows_without_events(
    stack: EmbeddedStack, envelopes: Envelopes, layout_env: dict[str, str]
) -> None:
    """metadata-only: rows get the Jellyfin fields, nothing is republished, no event id is stored;
    the rows a worker finishes together are merged with one batched call."""
    _, workers = await run_backfill(stack, layout_env, "--mode", "metadata-only")
    assert [w.code for w in workers] == [0, 0]
    assert envelopes.seen == []
    enriched = [row_id for row_id, seed_row in stack.rows.items() if seed_row.expect == "republished"]
    for row_id in enriched:
        assert_enriched(stack, row_id, None)
    assert stack.catalog.calls["rpc_batches"] > 0
    assert stack.catalog.calls["rpc"] < len(enriched), "merges were not batched"


async def test_rerun_after_completion_leaves_dead_lettered_rows_out_and_says_why(
    stack: EmbeddedStack, layout_env: dict
) -> None:
    """Enriched rows are no longer candidates, and the unresolved ones already have a dead letter: a
    second run enqueues nothing and reports them left out by reason (they would only fail again and add
    a dead letter); --include-dead-lettered enqueues them on purpose."""
    await run_backfill(stack, layout_env, "--mode", "metadata-only")
    env = stack.env(**layout_env)
    unresolved = Counter(
        r.expect.removeprefix("dlq:") for r in stack.rows.values() if r.expect.startswith("dlq:")
    )
    dry = (await run_cli("producer", ["enqueue", "--all-missing", "--json", "--dry-run"], env)).json_lines()[
        -1
    ]
    assert dry["would_enqueue"] == 0
    assert dry["left_out"] == sum(unresolved.values()) and dry["left_out_by_reason"] == dict(unresolved)
    again = await run_cli("producer", ["enqueue", "--all-missing"], env)
    assert again.code == 0, again.stderr
    assert (
        f"0 enqueued, 0 already pending, 0 failed, 0 not candidates, {sum(unresolved.values())} left out"
        in again.stdout
    )
    assert f"ambiguous_match={unresolved['ambiguous_match']}" in again.stdout
    dlq_before = len(await read_stream(stack.nats_url, layout_env["BACKFILL_DLQ_STREAM"]))
    forced = await run_cli("producer", ["enqueue", "--all-missing", "--include-dead-lettered", "--json"], env)
    summary = forced.json_lines()[-1]
    assert summary["enqueued"] == sum(unresolved.values()) and summary["left_out"] == 0
    assert len(await read_stream(stack.nats_url, layout_env["BACKFILL_DLQ_STREAM"])) == dlq_before


async def test_without_the_merge_function_optimistic_patches_keep_every_key(
    nats_url: str, contracts_dir: Any, layout_env: dict[str, str]
) -> None:
    """RPC not installed (404 PGRST202): the fallback PATCH pins the old meta and loses no key."""
    from backfill_doubles.stack import StackOptions

    options = StackOptions(size=60, nats_url=nats_url, contracts_dir=contracts_dir, rpc_installed=False)
    with EmbeddedStack(options) as stack:
        _, workers = await run_backfill(stack, layout_env, "--mode", "metadata-only")
        assert [w.code for w in workers] == [0, 0]
        assert stack.catalog.calls["patch"] >= sum(
            1 for r in stack.rows.values() if r.expect == "republished"
        )
        for row_id, seed_row in stack.rows.items():
            if seed_row.expect == "republished":
                assert_enriched(stack, row_id, None)
