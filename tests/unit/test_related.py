"""Related YouTube videos: the query, the stored shape and the row's keys, as PMOVES' own script has them."""

from __future__ import annotations

from typing import Any

import pytest

from backfill.core import related
from backfill.core.model import JellyfinItem, Row
from backfill.core.payload import Enrichment, LinkConfig, build_meta_patch, build_payload
from tests.support.pmoves_script import script_links, script_row_keys, script_tags

LINKS = LinkConfig(public_base="https://watch.example.org")
ITEM = JellyfinItem(id="a" * 32, name="Night Drive", run_time_ticks=10_000_000)


def result(n: int, similarity: float, excerpt: Any = None) -> dict[str, Any]:
    return {
        "video_id": f"v{n}",
        "title": f"Video {n}",
        "url": f"https://www.youtube.com/watch?v=v{n}",
        "similarity": similarity,
        "excerpt": f"excerpt {n} " * 40 if excerpt is None else excerpt,
        "timestamp": 12.5,
    }


@pytest.mark.parametrize(
    ("title", "meta", "query"),
    [
        ("Night Drive", {"description": "a car at night"}, "Night Drive a car at night"),
        ("Night Drive", {}, "Night Drive"),
        (None, {"title": "From Meta", "description": "d"}, "From Meta d"),
        (None, {}, "Untitled"),
        ("", {"description": "only this"}, "Untitled only this"),
    ],
)
def test_query_is_title_space_description_as_the_script_builds_it(
    title: str | None, meta: dict[str, Any], query: str
) -> None:
    """Row title, else meta's, else "Untitled"; then meta's description; trimmed."""
    assert related.search_query(Row(id=1, title=title, meta=meta)) == query


def test_the_first_three_results_are_stored_in_the_answers_order_as_the_script_stores_them() -> None:
    """PMOVES.yt answers best first; the first 3 are kept as given (never re-sorted), excerpts cut at 200."""
    answer = [result(1, 0.91), result(2, 0.95), result(3, 0.8), result(4, 0.75), result(5, 0.71)]
    found = related.from_results(answer)
    assert found.result == related.LINKED
    assert list(found.links) == script_links(answer)
    assert [link["video_id"] for link in found.links] == ["v1", "v2", "v3"]
    assert all(len(link["transcript_excerpt"]) == 200 for link in found.links)
    assert set(found.links[0]) == {"video_id", "title", "url", "similarity", "transcript_excerpt"}


def test_missing_fields_are_stored_as_the_script_would_read_them() -> None:
    """Absent keys become null, an absent excerpt an empty one (the script's `.get(..., "")`)."""
    answer = [{"video_id": "only"}]
    assert list(related.from_results(answer).links) == script_links(answer)


def test_no_results_is_no_match_and_stores_nothing() -> None:
    found = related.from_results([])
    assert (found.result, found.links) == (related.NO_MATCH, ())
    assert related.payload_meta(found) == {}
    assert related.meta_patch(found, {}) == {}


def test_a_linked_payload_carries_the_entries_in_meta_and_the_tag() -> None:
    """`payload.meta.related_youtube` (the script's Jellyfin meta is merged flat into payload.meta) and
    `youtube-linked` among the tags; the row's own tags and keys kept."""
    answer = [result(1, 0.9), result(2, 0.8)]
    row = Row(id=3, title="Night Drive", content_url="s3://outputs/a.mp4", meta={"tags": ["car"], "k": 1})
    enrichment = Enrichment(ITEM, "jellyfin_search", None, None, related=related.from_results(answer))
    payload = build_payload(row, enrichment, LINKS, "pmoves")
    assert payload["meta"]["related_youtube"] == script_links(answer)
    assert set(payload["tags"]) == script_tags(["car", "backfill"])
    assert payload["meta"]["k"] == 1
    assert "related_youtube" not in payload  # in meta only, like the script


def test_the_row_gets_the_entries_and_the_scripts_two_summary_keys() -> None:
    answer = [result(1, 0.9), result(2, 0.8), result(3, 0.79), result(4, 0.75)]
    enrichment = Enrichment(ITEM, "jellyfin_id", None, None, related=related.from_results(answer))
    patch = build_meta_patch(enrichment, LINKS, version="v", run_id="r", event_id=None, sent_at=None).patch
    assert patch["related_youtube"] == script_links(answer)
    assert {k: patch[k] for k in ("youtube_linked_count", "youtube_top_match")} == script_row_keys(answer)
    assert related.GAP_KEY not in patch


def test_not_asking_for_links_changes_nothing() -> None:
    row = Row(id=3, title="t", content_url="s3://outputs/a.mp4", meta={"tags": ["x"]})
    payload = build_payload(row, Enrichment(ITEM, "jellyfin_id", None, None), LINKS, "pmoves")
    assert payload["tags"] == ["x", "backfill"]
    assert "related_youtube" not in payload["meta"]


@pytest.mark.parametrize("result_name", [related.NO_MATCH, related.REJECTED])
def test_no_links_for_a_4xx_or_no_match_and_no_tag(result_name: str) -> None:
    found = related.Related(result_name, error="pmoves_yt: 400" if result_name == related.REJECTED else None)
    row = Row(id=3, title="t", content_url="s3://outputs/a.mp4")
    payload = build_payload(row, Enrichment(ITEM, "jellyfin_id", None, None, related=found), LINKS, "p")
    assert related.YOUTUBE_TAG not in payload["tags"]
    assert related.meta_patch(found, {}) == {}


def test_giving_up_records_the_gap_and_a_later_linking_clears_it() -> None:
    """gave_up: no links, `backfill_youtube_gap` with the error; a run that does not give up sets it null."""
    unavailable = related.failed(related.UNAVAILABLE, "pmoves_yt: POST /yt/search -> 502: x" * 20)
    gave_up = unavailable.given_up()
    patch = related.meta_patch(gave_up, {})
    assert gave_up.result == related.GAVE_UP and not gave_up.links
    assert patch == {related.GAP_KEY: {"result": "gave_up", "error": unavailable.error}}
    assert len(patch[related.GAP_KEY]["error"]) == related.ERROR_CHARS
    earlier = {related.GAP_KEY: patch[related.GAP_KEY]}
    assert related.meta_patch(related.from_results([]), earlier) == {related.GAP_KEY: None}
    assert related.meta_patch(related.from_results([]), {related.GAP_KEY: None}) == {}


def test_the_summary_shows_the_links_or_why_there_are_none() -> None:
    assert related.from_results([result(1, 0.9)]).summary()["related_youtube"][0]["video_id"] == "v1"
    assert related.failed(related.UNAVAILABLE, "boom").summary() == {"result": "unavailable", "error": "boom"}
