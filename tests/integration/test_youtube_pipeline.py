"""YouTube linking inside one request (RowProcessor against the doubles over loopback): PMOVES.yt's
failures are retried while the message may be retried, and give way to a backfill without links on its
last chance (the delivery limit, or the retry budget as the consumer judges it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backfill.adapters.transport import HttpClient, make_client
from backfill.adapters.youtube import YoutubeSearch
from backfill.core.model import Row
from backfill.core.outcome import Ack, DeadLetter, Outcome, Retry, RetryPolicy
from backfill.core.related import GAP_KEY, GAVE_UP, LINKED, NO_MATCH, REJECTED, Related
from backfill.core.wire import Mode, YoutubeLinking, new_request
from backfill.enrich import find_related
from backfill_doubles.pmoves_yt import PmovesYtDouble
from backfill_doubles.serve import serve
from tests.support.pipeline import Rig, pipeline_rig

LINKING = YoutubeLinking(threshold=0.7, limit=5)
TITLE = "Night Drive (7)"


@pytest.fixture
async def rig(nats_url: str, contracts_dir: Path) -> AsyncIterator[Rig]:
    async with pipeline_rig(nats_url, contracts_dir, timeout=2.0) as built:
        built.youtube.add_video("nd7", TITLE)
        yield built


def add(rig: Rig) -> int:
    item = rig.jellyfin.add_item(TITLE, run_time_ticks=600_000_000)
    meta = {"jellyfin_item_id": item["Id"], "tags": ["studio"]}
    return int(
        rig.db.add_row(title=TITLE, status="published", content_url="s3://outputs/a.mp4", meta=meta)["id"]
    )


async def handle(rig: Rig, row_id: int, attempt: int, verdict: type[Outcome] | None = None) -> Outcome:
    """Handle with a consumer that settles a retry as `verdict` (Retry: retries left; DeadLetter: spent)."""

    async def settle(retry: Retry) -> Outcome:
        return retry if verdict is Retry else DeadLetter("retries_exhausted", retry.error)

    request = new_request(row_id, "2025-10-14", Mode.REPUBLISH, "run-t", youtube=LINKING)
    return await rig.processor.handle(request, attempt, settle if verdict else None)


async def test_a_match_is_linked_and_published_with_the_tag(rig: Rig) -> None:
    row_id = add(rig)
    outcome = await handle(rig, row_id, attempt=1)
    assert isinstance(outcome, Ack) and outcome.youtube == LINKED
    (envelope,) = rig.agent.envelopes
    assert envelope["payload"]["meta"]["related_youtube"][0]["video_id"] == "nd7"
    assert "youtube-linked" in envelope["payload"]["tags"]
    assert rig.youtube.requests == [{"query": TITLE, "limit": 5, "threshold": 0.7}]


async def test_502_with_retries_left_is_a_retry_and_nothing_is_written(rig: Rig) -> None:
    """The message is retried (nak with a delay): no event, the row untouched."""
    row_id = add(rig)
    rig.youtube.fail_rate = 1.0
    outcome = await handle(rig, row_id, attempt=1, verdict=Retry)
    assert isinstance(outcome, Retry) and "pmoves_yt" in outcome.error and "502" in outcome.error
    assert rig.agent.envelopes == []
    assert "jellyfin_public_url" not in rig.db.rows[row_id]["meta"]


@pytest.mark.parametrize(
    ("attempt", "verdict"),
    [(RetryPolicy().max_attempts, None), (2, DeadLetter)],
    ids=["last-delivery", "budget-spent"],
)
async def test_502_on_the_last_chance_backfills_without_links_and_records_the_gap(
    rig: Rig, attempt: int, verdict: type[Outcome] | None
) -> None:
    """On the last allowed delivery (or once the consumer says the budget is spent): published without
    links or tag, the gap on the row, the outcome counted as gave_up."""
    row_id = add(rig)
    rig.youtube.fail_rate = 1.0
    outcome = await handle(rig, row_id, attempt=attempt, verdict=verdict)
    assert isinstance(outcome, Ack) and (outcome.result, outcome.youtube) == ("done", GAVE_UP)
    (envelope,) = rig.agent.envelopes
    assert "related_youtube" not in envelope["payload"]["meta"]
    assert "youtube-linked" not in envelope["payload"]["tags"]
    meta = rig.db.rows[row_id]["meta"]
    assert meta[GAP_KEY]["result"] == GAVE_UP and "502" in meta[GAP_KEY]["error"]
    assert meta["backfill_event_id"] == envelope["id"]


async def test_a_later_run_that_links_clears_the_gap(rig: Rig) -> None:
    row_id = add(rig)
    rig.youtube.fail_rate = 1.0
    await handle(rig, row_id, attempt=RetryPolicy().max_attempts)
    rig.youtube.fail_rate = 0.0
    meta = rig.db.rows[row_id]["meta"]
    del meta["jellyfin_public_url"]  # the operator makes it a candidate again
    outcome = await handle(rig, row_id, attempt=1)
    assert isinstance(outcome, Ack) and outcome.youtube == LINKED
    assert rig.db.rows[row_id]["meta"][GAP_KEY] is None


async def test_a_4xx_means_no_links_at_once_and_an_empty_query_asks_nothing() -> None:
    """PMOVES.yt not where PMOVES_YT_URL points (404): rejected without retrying; no text: no request."""
    yt = PmovesYtDouble()
    http: HttpClient = make_client(2.0)
    try:
        async with serve(yt.app()) as url:
            row = Row(id=1, title=TITLE)
            answers: list[int | None] = []
            wrong = YoutubeSearch(
                http, f"{url}/not-here", observe=lambda _s, status, _t: answers.append(status)
            )
            rejected = await find_related(wrong, row, LINKING)
            assert rejected.result == REJECTED and "404" in (rejected.error or "")
            assert answers == [404]  # asked once, never retried
            right = YoutubeSearch(http, url)
            assert (await find_related(right, row, LINKING)).result == NO_MATCH
            assert await find_related(right, Row(id=2, title="   "), LINKING) == Related(NO_MATCH)
            assert len(yt.requests) == 1  # the blank title asked nothing
    finally:
        await http.aclose()
