"""`--link-youtube` and the live publisher's keys, with the installed producer and a worker process
against the embedded stack (PMOVES.yt's double over loopback): rows linked as PMOVES' own script links
them, and backfilled without links (the gap recorded and counted) while PMOVES.yt answers 502."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backfill.adapters.transport import READ_ATTEMPTS
from backfill.core.model import Row
from backfill.core.related import GAP_KEY, search_query
from backfill_doubles.stack import PUBLIC_BASE, EmbeddedStack, StackOptions
from tests.e2e.conftest import Envelopes, run_cli
from tests.e2e.processes import WorkerProcess, eventually
from tests.support.pmoves_script import script_links, script_row_keys, script_tags

pytestmark = pytest.mark.slow
LIVE_KEYS = ("jellyfin_item_type", "jellyfin_base_url")


@pytest.fixture
def stack(nats_url: str, contracts_dir: Path) -> Iterator[EmbeddedStack]:
    """26 rows, two of each kind; PMOVES.yt knows videos for rows 3, 6, 15, 18 and 21."""
    with EmbeddedStack(StackOptions(size=26, nats_url=nats_url, contracts_dir=contracts_dir)) as embedded:
        yield embedded


def linked_rows(stack: EmbeddedStack) -> set[int]:
    titles = {video.title for video in stack.seed.videos}
    return {row_id for row_id, seed in stack.rows.items() if seed.title in titles}


def republished(stack: EmbeddedStack) -> set[int]:
    return {row_id for row_id, seed in stack.rows.items() if seed.expect == "republished"}


def youtube_links_total(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    family = next(f for f in text_string_to_metric_families(text) if f.name == "backfill_youtube_links")
    return {s.labels["result"]: s.value for s in family.samples if s.name.endswith("_total")}


async def backfill(stack: EmbeddedStack, env: dict[str, str], *enqueue: str) -> dict[str, float]:
    """Enqueue, run one worker until every row to republish is enriched; the worker's link counts."""
    ran = await run_cli("producer", ["enqueue", "--json", *enqueue], env)
    assert ran.code == 0, ran.stderr
    worker = await WorkerProcess(env).start()
    wanted = republished(stack) & {int(i) for i in enqueue[enqueue.index("--ids") + 1].split(",")}

    def done() -> bool:
        return all(stack.catalog.rows[row_id]["meta"].get("jellyfin_public_url") for row_id in wanted)

    await eventually(done, 60, "every row enriched")
    counts = youtube_links_total(worker.metrics_port)
    worker.terminate()
    assert await worker.wait() == 0, worker.stderr.decode()[-3000:]
    return counts


def answer_for(stack: EmbeddedStack, row_id: int) -> list[dict[str, Any]]:
    """PMOVES.yt's answer to the query of this row (as the double gave it)."""
    row = stack.originals[row_id]
    query = search_query(Row(id=row_id, title=row["title"], meta=row["meta"]))
    (answer,) = {json.dumps(a): a for a in stack.youtube.answers if a["query"] == query}.values()
    results: list[dict[str, Any]] = answer["results"]
    return results


async def test_rows_are_linked_as_pmoves_script_links_them_and_carry_the_live_keys(
    stack: EmbeddedStack, envelopes: Envelopes, layout_env: dict[str, str]
) -> None:
    """Dry run and preview show the links; the worker stores the script's entries, tag and row keys for
    every linked row and nothing for the others; every enriched row and event has the live keys, and
    `jellyfin_played` only the row whose item the user played."""
    env = stack.env(**layout_env)
    played_row = 1
    played_item = stack.item_ids[stack.rows[played_row].item_key or ""]
    stack.jellyfin.items[played_item]["UserData"]["Played"] = True
    linked = linked_rows(stack)
    assert linked == {3, 6, 15, 18, 21}
    ids = ",".join(str(i) for i in sorted(republished(stack)))

    dry = await run_cli("producer", ["enqueue", "--dry-run", "--link-youtube", "--ids", "1,3", "--json"], env)
    assert dry.code == 0, dry.stderr
    listed = {row["id"]: row["youtube"] for row in json.loads(dry.stdout)["rows"]}
    assert listed[1] == {"result": "no_match"}
    assert [link["video_id"] for link in listed[3]["related_youtube"]] == ["yt0003a", "yt0003b"]
    shown = await run_cli("producer", ["preview", "--link-youtube", "--ids", "3", "--json"], env)
    assert shown.code == 0, shown.stderr
    (record,) = json.loads(shown.stdout)["rows"]
    assert record["payload"]["meta"]["related_youtube"] == listed[3]["related_youtube"]

    counts = await backfill(stack, env, "--link-youtube", "--ids", ids, "--run-id", "run-yt")
    assert counts["linked"] == len(linked)
    assert counts["no_match"] == len(republished(stack) - linked)
    assert counts["gave_up"] == counts["rejected"] == counts["off"] == 0

    by_row = {row_id: e for e in envelopes.seen for row_id in [row_for(stack, e)] if row_id}
    assert set(by_row) == republished(stack)
    for row_id in sorted(republished(stack)):
        meta = stack.catalog.rows[row_id]["meta"]
        payload = by_row[row_id]["payload"]
        original_tags = stack.originals[row_id]["meta"]["tags"]
        for keys in (meta, payload["meta"]):
            assert (keys["jellyfin_item_type"], keys["jellyfin_base_url"]) == ("Movie", PUBLIC_BASE)
            assert keys.get("jellyfin_played") is (True if row_id == played_row else None)
        if row_id in linked:
            results = answer_for(stack, row_id)
            assert len(results) == 2
            assert payload["meta"]["related_youtube"] == script_links(results)
            assert set(payload["tags"]) == script_tags([*original_tags, "backfill"])
            assert meta["related_youtube"] == script_links(results)
            assert {k: meta[k] for k in script_row_keys(results)} == script_row_keys(results)
        else:
            assert "related_youtube" not in payload["meta"] and "related_youtube" not in meta
            assert "youtube-linked" not in payload["tags"]
        assert GAP_KEY not in meta
    assert all("apikey" not in h and "Authorization" not in h for h in stack.youtube.headers)


def row_for(stack: EmbeddedStack, envelope: dict[str, Any]) -> int | None:
    """The row an envelope was published for, by the event id stored on the row."""
    for row_id, row in stack.catalog.rows.items():
        if row["meta"].get("backfill_event_id") == envelope["id"]:
            return row_id
    return None


async def test_rows_are_backfilled_without_links_while_pmoves_yt_answers_502(
    stack: EmbeddedStack, envelopes: Envelopes, layout_env: dict[str, str]
) -> None:
    """Every delivery retries PMOVES.yt; the last allowed one backfills the row anyway: no links, the
    gap on the row, counted as gave_up, and `producer status` counts the rows; nothing dead-lettered."""
    env = stack.env(**layout_env, BACKFILL_MAX_DELIVER="2")
    stack.youtube.fail_rate = 1.0  # its Hi-RAG backend fails every search: 502
    rows = [3, 6, 14]
    counts = await backfill(stack, env, "--link-youtube", "--ids", ",".join(map(str, rows)))
    assert counts["gave_up"] == len(rows)
    assert counts["linked"] == counts["no_match"] == 0
    assert not stack.youtube.answers
    assert len(stack.youtube.requests) > READ_ATTEMPTS * len(rows)  # retried beyond one delivery each
    for row_id in rows:
        meta = stack.catalog.rows[row_id]["meta"]
        assert meta[GAP_KEY]["result"] == "gave_up" and "502" in meta[GAP_KEY]["error"]
        assert "related_youtube" not in meta
        assert meta["jellyfin_item_type"] == "Movie"
    assert len(envelopes.seen) == len(rows)
    assert all("youtube-linked" not in e["payload"]["tags"] for e in envelopes.seen)
    status = await run_cli("producer", ["status", "--json", "--sample", "0"], env)
    assert status.code == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["rows_youtube_gap"] == len(rows)
    assert report["dead_letters"] == {}
