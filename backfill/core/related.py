"""Related YouTube videos for a row, linked the way PMOVES' own backfill script links them: pure, no I/O.

docs/upstreams.md §8: the script asks PMOVES.yt (`POST /yt/search`) with `query = title + " " +
description`, keeps the first 3 results (PMOVES.yt answers best first) as `related_youtube` entries
`{video_id, title, url, similarity, transcript_excerpt}` (the excerpt cut to 200 characters) in the
payload's meta, adds the tag `youtube-linked`, and writes `youtube_linked_count` (results found) and
`youtube_top_match` (the first result's video id) into the row. The backfill stores the same, and the
entries on the row too, so a linked row can be seen as such.

What the script lacks: it drops links silently when PMOVES.yt fails. Here a 4xx answer or no match
means no links (`rejected`, `no_match`); a timeout or a 5xx is retried like any upstream failure, and
when the message's retries are spent the row is backfilled without links, counted as `gave_up` and
marked with `backfill_youtube_gap` (cleared again by a later linking that does not give up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from backfill.core.model import Row

RELATED_KEY = "related_youtube"
COUNT_KEY = "youtube_linked_count"
TOP_KEY = "youtube_top_match"
GAP_KEY = "backfill_youtube_gap"
YOUTUBE_TAG = "youtube-linked"
STORED_LINKS = 3
EXCERPT_CHARS = 200
UNTITLED = "Untitled"  # the script's title when a row has none
ERROR_CHARS = 300

# How linking ended for a row (the label of backfill_youtube_links_total{result}).
LINKED = "linked"  # PMOVES.yt found related videos: stored
NO_MATCH = "no_match"  # nothing above the threshold (or nothing to search for)
REJECTED = "rejected"  # a 4xx answer: retrying cannot change it; no links
UNAVAILABLE = "unavailable"  # timeout, 5xx: the worker retries, preview reports it
GAVE_UP = "gave_up"  # still unavailable when the message's retries were spent: no links, gap recorded
OFF = "off"  # the request did not ask for linking
RESULTS = (LINKED, NO_MATCH, REJECTED, GAVE_UP, OFF)  # what a finished row can end with


class SearchAnswer(msgspec.Struct, frozen=True):
    """PMOVES.yt's answer, `{ok, query, results, total}`; only `results` is used."""

    results: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Related:
    """What asking PMOVES.yt gave for one row."""

    result: str
    links: tuple[dict[str, Any], ...] = ()
    found: int = 0  # how many results the answer held (the script's youtube_linked_count)
    error: str | None = None  # rejected, unavailable, gave_up: why
    retry_after: float | None = None  # unavailable: the upstream's Retry-After, when it sent one

    def given_up(self) -> Related:
        """Still unavailable on the message's last chance: backfilled without links."""
        return Related(GAVE_UP, error=self.error)

    def summary(self) -> dict[str, Any]:
        """For preview and dry-run output: the result, and the stored links or the error."""
        shown: dict[str, Any] = {"result": self.result}
        if self.links:
            shown[RELATED_KEY] = list(self.links)
        if self.error:
            shown["error"] = self.error
        return shown


def _text(value: object) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def search_query(row: Row) -> str:
    """`title + " " + description` as the script builds it: the row's title, else meta's, else
    "Untitled"; meta's description, else nothing."""
    meta = row.meta_dict
    title = row.title or meta.get("title") or UNTITLED
    description = meta.get("description") or ""
    return f"{_text(title)} {_text(description)}".strip()


def stored_entry(result: Mapping[str, Any]) -> dict[str, Any]:
    """One `related_youtube` entry from one search result, keys and values as the script stores them."""
    excerpt = result.get("excerpt")
    return {
        "video_id": result.get("video_id"),
        "title": result.get("title"),
        "url": result.get("url"),
        "similarity": result.get("similarity"),
        "transcript_excerpt": excerpt[:EXCERPT_CHARS] if isinstance(excerpt, str) else "",
    }


def from_results(results: Sequence[Mapping[str, Any]]) -> Related:
    """`linked` with the first 3 results as entries, or `no_match`."""
    if not results:
        return Related(NO_MATCH)
    links = tuple(stored_entry(result) for result in results[:STORED_LINKS])
    return Related(LINKED, links=links, found=len(results))


def failed(result: str, error: str, retry_after: float | None = None) -> Related:
    return Related(result, error=error[:ERROR_CHARS], retry_after=retry_after)


def payload_meta(related: Related | None) -> dict[str, Any]:
    """What linking adds to the payload's meta: the entries, when there are any."""
    if related is None or not related.links:
        return {}
    return {RELATED_KEY: list(related.links)}


def payload_tag(related: Related | None) -> str | None:
    return YOUTUBE_TAG if related is not None and related.links else None


def meta_patch(related: Related | None, current: Mapping[str, Any]) -> dict[str, Any]:
    """What linking merges into the row: the entries and the script's two summary keys when linked; the
    gap when it gave up; a gap left by an earlier run cleared (set to null) by one that did not."""
    if related is None:
        return {}
    patch: dict[str, Any] = {}
    if related.links:
        patch[RELATED_KEY] = list(related.links)
        patch[COUNT_KEY] = related.found
        patch[TOP_KEY] = related.links[0]["video_id"]
    if related.result == GAVE_UP:
        patch[GAP_KEY] = {"result": GAVE_UP, "error": related.error or ""}
    elif current.get(GAP_KEY) is not None:
        patch[GAP_KEY] = None
    return patch
