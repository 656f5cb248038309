"""`make demo`'s program runs end to end on a fresh embedded stack and reports a consistent summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from backfill_doubles.demo import table
from backfill_doubles.seed import mixed_catalog
from backfill_doubles.stack import EmbeddedStack, StackOptions
from tests.e2e.demo_process import assert_nothing_left, demo

pytestmark = pytest.mark.slow


async def test_demo_runs_and_summarises(demo_tmpdir: Path) -> None:
    """Every resolvable row enriched, one envelope each, dead letters by reason, workers exit 0."""
    async with demo("--size", "65", "--json", tmpdir=demo_tmpdir) as run:
        assert await run.exit() == 0, "".join(run.output)[-4000:]
    summary = json.loads(run.output[-1].strip().splitlines()[-1])
    assert summary["worker_exit_codes"] == [0, 0]
    # 65 rows = 5 of each of the 13 kinds: 8 kinds resolve, 3 dead-letter, 2 must stay untouched.
    assert summary["enriched"] == 40
    assert summary["envelopes_published"] == 40
    assert summary["dead_letters"] == {"ambiguous_match": 5, "invalid_payload": 5, "jellyfin_not_found": 5}
    assert summary["after"]["missing_jellyfin_url"] == 15
    discord = summary["discord"]
    assert 0 < discord["embeds_received"] <= 40
    assert (
        discord["embeds_received"]
        + discord["lost_after_3_attempts"]
        + discord["not_posted_when_the_demo_ended"]
        == 40
    )
    # --link-youtube: PMOVES.yt's double knows videos for 12 of the 40 rows that resolve
    assert summary["youtube_linked_rows"] == len(mixed_catalog(65).videos) // 2 == 12
    # `producer verify` reads what publisher-discord's double recorded: it agrees with what Discord got
    checked = summary["verify"]
    assert checked["rows"] == 40 and checked["not_republished"] == 0
    assert checked["delivered"] == discord["embeds_received"]
    assert checked["failed"] == discord["lost_after_3_attempts"]
    assert checked["not_seen"] == discord["not_posted_when_the_demo_ended"]
    # and reading the channel itself agrees with what Discord got, each embed found once
    channel = summary["verify_channel"]
    assert channel["rows"] == 40 and channel["duplicated"] == 0
    assert channel["delivered"] == discord["embeds_received"]
    assert channel["not_seen"] == discord["lost_after_3_attempts"] + discord["not_posted_when_the_demo_ended"]
    await assert_nothing_left(demo_tmpdir)


async def test_the_summary_reads_as_an_aligned_table_with_a_pointer_to_what_next(demo_tmpdir: Path) -> None:
    """Without --json: words in aligned columns (no Python reprs), then where to look next."""
    async with demo("--size", "26", tmpdir=demo_tmpdir) as run:
        assert await run.exit() == 0, "".join(run.output)[-4000:]
    output = "".join(run.output)
    summary = output.split("Backfill summary", 1)[1]
    assert "{" not in summary and "': " not in summary, output  # no dict reprs
    cells = [re.split(r"\s{2,}", line.strip()) for line in summary.splitlines() if line.startswith("  ")]
    rows = {label: values for label, *values in cells}
    assert rows["published, still without"][1] == "6"  # 26 rows: 2 of each of the 13 kinds
    assert rows["rows enriched by this run"] == ["16"]
    assert rows["dead letters"][0].startswith("6 (")
    assert "`producer status`" in summary and "/metrics" in summary and "`producer dlq list`" in summary
    assert rows["rows linked to YouTube videos"] == ["5"]  # 26 rows: 3, 6, 15, 18 and 21 have videos
    assert rows["Discord delivery (producer verify)"][0].endswith("not seen")


def test_table_aligns_every_value_in_one_column() -> None:
    summary = {
        "before": {"rows": 3, "published": 2, "with_jellyfin_url": 0, "missing_jellyfin_url": 2},
        "after": {"rows": 3, "published": 2, "with_jellyfin_url": 1, "missing_jellyfin_url": 1},
        "worker_exit_codes": [0, 0],
        "enriched": 1,
        "envelopes_published": 1,
        "dead_letters": {"ambiguous_match": 1, "jellyfin_not_found": 2},
        "discord": {
            "embeds_received": 1,
            "rate_limited_429": 0,
            "lost_after_3_attempts": 0,
            "not_posted_when_the_demo_ended": 0,
        },
    }
    text = table(summary)
    lines = [line for line in text.splitlines() if line.startswith("  ")]
    catalog, run = lines[:5], [line for line in lines[5:] if line.strip()]
    assert catalog[0].split() == ["catalog", "before", "after"]
    assert len({len(line) for line in catalog}) == 1  # before and after right-aligned in fixed columns
    assert len({len(line) - len(line.split("  ")[-1].lstrip()) for line in run}) == 1  # one value column
    assert "dead letters" in text and "3 (ambiguous_match 1, jellyfin_not_found 2)" in text
    assert "worker exit codes" in text and "0, 0" in text


async def test_the_demo_stack_checks_every_payload_against_the_pmoves_contracts() -> None:
    """The stack as the demo starts it (default options) validates: an invalid payload is Agent Zero's 500."""
    with EmbeddedStack(StackOptions(size=1, catalog="postgrest")) as stack:
        async with httpx.AsyncClient(base_url=stack.urls["agent_zero"]) as http:
            body = {"topic": "content.published.v1", "source": "backfill"}
            valid = {"artifact_uri": "s3://outputs/a.mp4", "published_path": "a.mp4"}
            assert (await http.post("/events/publish", json={**body, "payload": valid})).status_code == 200
            invalid = {**valid, "artifact_uri": "https://not-s3/a.mp4"}
            assert (await http.post("/events/publish", json={**body, "payload": invalid})).status_code == 500
