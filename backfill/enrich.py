"""Read-only enrichment of one row: find its Jellyfin item, a thumbnail, and build the payload.

Shared by the worker and `producer preview`, so what an operator previews is exactly what a worker
would send. Nothing here writes anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from backfill.core import related as youtube
from backfill.core.catalog import PUBLISHED
from backfill.core.contract import payload_problems
from backfill.core.errors import UpstreamRejected, UpstreamUnavailable
from backfill.core.matching import Unmatched, choose_match, date_hint, search_term
from backfill.core.model import JellyfinItem, Row, normalize_item_id
from backfill.core.outcome import Ack, AckResult, DeadLetter, DlqReason, SkipReason
from backfill.core.payload import (
    Enrichment,
    LinkConfig,
    ResolvedBy,
    ThumbnailSource,
    artifact_uri,
    build_payload,
    primary_image_url,
)
from backfill.core.ports import MediaLibrary, ThumbnailStore, VideoSearch
from backfill.core.wire import YoutubeLinking

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What a worker would do for a row: publish `payload`, then merge the Jellyfin fields into meta."""

    row: Row
    enrichment: Enrichment
    payload: dict[str, Any]

    @property
    def youtube_unavailable(self) -> youtube.Related | None:
        """The linking result when PMOVES.yt could not answer (retry, or give up), else None."""
        related = self.enrichment.related
        return related if related is not None and related.result == youtube.UNAVAILABLE else None

    def without_youtube_links(self) -> Plan:
        """PMOVES.yt stayed unavailable: the same payload (it carries no links), the gap recorded."""
        related = self.enrichment.related
        assert related is not None
        return replace(self, enrichment=replace(self.enrichment, related=related.given_up()))


def skip_reason(row: Row | None) -> SkipReason | None:
    """Rows the backfill must leave alone: gone, no longer published, or already enriched."""
    if row is None:
        return SkipReason.ROW_MISSING
    if row.status != PUBLISHED:
        return SkipReason.NOT_PUBLISHED
    if row.meta_dict.get("jellyfin_public_url") is not None:
        return SkipReason.ALREADY_ENRICHED
    return None


async def find_related(videos: VideoSearch | None, row: Row, linking: YoutubeLinking) -> youtube.Related:
    """Related YouTube videos for `row`, or why there are none. PMOVES.yt's failures become values here
    (whether to retry is the caller's decision), so they never fail the row's Jellyfin enrichment."""
    query = youtube.search_query(row)
    if not query:
        return youtube.Related(youtube.NO_MATCH)
    if videos is None:
        return youtube.failed(youtube.REJECTED, "PMOVES.yt is not configured in this process")
    try:
        return youtube.from_results(await videos.search(query, linking))
    except UpstreamRejected as exc:
        log.warning("PMOVES.yt refused the search; no links", extra={"row_id": row.id, "error": str(exc)})
        return youtube.failed(youtube.REJECTED, str(exc))
    except UpstreamUnavailable as exc:
        return youtube.failed(youtube.UNAVAILABLE, str(exc), exc.retry_after)


class Enricher:
    def __init__(
        self,
        jellyfin: MediaLibrary,
        storage: ThumbnailStore | None,
        links: LinkConfig,
        default_namespace: str,
        search_limit: int = 20,
        videos: VideoSearch | None = None,
    ) -> None:
        """`videos`: PMOVES.yt, asked only for requests that want YouTube links."""
        self._videos = videos
        self._jellyfin = jellyfin
        self._storage = storage
        self._links = links
        self._namespace = default_namespace
        self._search_limit = search_limit

    async def find_item(self, row: Row) -> tuple[JellyfinItem, ResolvedBy] | Unmatched:
        """By `meta.jellyfin_item_id` first; else (no id, or Jellyfin lost it) by a confident title search."""
        item_id = normalize_item_id(row.meta_dict.get("jellyfin_item_id"))
        if item_id is not None:
            item = await self._jellyfin.get_item(item_id)
            if item is not None:
                return item, ResolvedBy.JELLYFIN_ID
        title = row.title or row.meta_dict.get("title")
        if not isinstance(title, str) or not title.strip():
            return Unmatched(
                DlqReason.JELLYFIN_NOT_FOUND, "row has no usable Jellyfin id and no title to search"
            )
        hint = date_hint(row)
        candidates = await self._jellyfin.search(search_term(title), hint, self._search_limit)
        match = choose_match(title, candidates, hint)
        if isinstance(match, Unmatched):
            return match
        return match.item, ResolvedBy.JELLYFIN_SEARCH

    async def thumbnail(self, row: Row, item: JellyfinItem) -> tuple[str | None, ThumbnailSource | None]:
        url = primary_image_url(item, self._links)
        if url is not None:
            return url, ThumbnailSource.JELLYFIN
        if self._storage is None:
            return None, None
        url = await self._storage.find_thumbnail(artifact_uri(row))
        return (url, ThumbnailSource.STORAGE) if url else (None, None)

    async def plan(self, row: Row | None, linking: YoutubeLinking | None = None) -> Plan | Ack | DeadLetter:
        """Skip, dead-letter, or a plan with a contract-valid payload (with related YouTube videos when
        `linking` asks for them). Raises only transient errors of Jellyfin, storage or the catalog."""
        reason = skip_reason(row)
        if reason is not None or row is None:
            return Ack(AckResult.SKIPPED, reason or SkipReason.ROW_MISSING)
        if (problem := row.meta_object_problem) is not None:
            return DeadLetter(DlqReason.INVALID_PAYLOAD, problem)  # merging into it would corrupt it
        found = await self.find_item(row)
        if isinstance(found, Unmatched):
            return DeadLetter(found.reason, found.detail)
        item, resolved_by = found
        thumb, source = await self.thumbnail(row, item)
        related = await find_related(self._videos, row, linking) if linking is not None else None
        enrichment = Enrichment(
            item=item, resolved_by=resolved_by, thumbnail_url=thumb, thumbnail_source=source, related=related
        )
        payload = build_payload(row, enrichment, self._links, self._namespace)
        problems = payload_problems(payload)
        if problems:
            return DeadLetter(DlqReason.INVALID_PAYLOAD, "; ".join(problems))
        return Plan(row=row, enrichment=enrichment, payload=payload)
