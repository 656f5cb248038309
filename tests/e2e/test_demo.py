"""`make demo`'s program runs end to end on a fresh embedded stack and reports a consistent summary."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

pytestmark = pytest.mark.slow


async def test_demo_runs_and_summarises() -> None:
    """Every resolvable row enriched, one envelope each, dead letters by reason, workers exit 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backfill_doubles.demo",
        "--size",
        "65",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()[-2000:] + err.decode()[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
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
        + discord["dropped_after_3_retries"]
        + discord["not_posted_when_the_demo_ended"]
        == 40
    )
