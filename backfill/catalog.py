"""The catalog port: where `studio_board` rows are read and their meta merged.

Two adapters implement it: `postgrest.PostgrestCatalog` (Supabase REST) and, for self-hosted stacks
with a reachable database, a direct PostgreSQL one. Both apply the same candidate rule and skip rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from backfill.errors import BackfillError, CatalogConflict, UpstreamRejected
from backfill.model import Row
from backfill.payload import MetaPatch

PUBLISHED = "published"
ROW_COLUMNS = ("id", "title", "namespace", "content_url", "status", "meta", "created_at")


def is_candidate(row: Row) -> bool:
    """The backfill's one definition of a row still to do: published and no Jellyfin public URL."""
    return row.status == PUBLISHED and row.meta_dict.get("jellyfin_public_url") is None


def merged_meta(old: object, patch: MetaPatch) -> dict[str, object]:
    """`defaults || coalesce(meta, '{}') || patch`: what the RPC and the optimistic fallback both write.

    A meta that is not an object (changed under us since the row was checked) is a conflict: the
    retry reads the row again and dead-letters it rather than replacing what an operator must fix.
    """
    if old is not None and not isinstance(old, dict):
        raise CatalogConflict(f"meta became {type(old).__name__} under us, not a JSON object")
    return {**patch.defaults, **(old or {}), **patch.patch}


PageFetcher = Callable[[int, int], Awaitable[list[Row]]]  # (after id, at most n) -> rows in id order
MergeItem = tuple[int, MetaPatch]
# row id -> the merged row, or the error of that row alone; a row that is gone is absent
MergeResults = dict[int, Row | BackfillError]
# the items as the batch statements take them ([{id, patch, defaults}]) -> the merged rows, or None
# when the backend has no batched merge
BatchMerge = Callable[[list[dict[str, Any]]], Awaitable[list[Row] | None]]


def unmerged(row: Row) -> CatalogConflict:
    """A row the merge left alone although it exists: its meta was not a JSON object (the merge skips
    such rows rather than append to an array). Retryable: the retry reads the row again and
    dead-letters it when its meta is still not an object."""
    why = row.meta_object_problem or "its meta was not a JSON object when the merge ran"
    return CatalogConflict(f"row {row.id} was not merged: {why}")


async def merged_or_gone(
    get_row: Callable[[int], Awaitable[Row | None]], row_id: int, merged: Row | None
) -> Row | None:
    """`merge_meta`'s answer: the merged row; else None when the row is gone, or the conflict of a row
    that exists but was left alone (its meta is not an object). Only reads when nothing was merged."""
    if merged is not None:
        return merged
    current = await get_row(row_id)
    if current is not None:
        raise unmerged(current)
    return None


async def _with_unmerged(
    fetch_rows: Callable[[Sequence[int]], Awaitable[list[Row]]], asked: Sequence[int], merged: list[Row]
) -> MergeResults:
    """The merged rows by id, plus a conflict for each row asked for that still exists but was not
    merged; a row that does not exist any more stays absent. Only reads when a row is missing."""
    results: MergeResults = {row.id: row for row in merged}
    missing = [row_id for row_id in asked if row_id not in results]
    if missing:
        for row in await fetch_rows(missing):
            results[row.id] = unmerged(row)
    return results


async def _merge_each(
    merge_one: Callable[[int, MetaPatch], Awaitable[Row | None]], items: Sequence[MergeItem]
) -> MergeResults:
    """Row by row, concurrently: a row's own failure becomes its result and never its neighbours'.

    Only the project's errors are results; anything else is a bug and is raised.
    """
    outcomes = await asyncio.gather(
        *(merge_one(row_id, patch) for row_id, patch in items), return_exceptions=True
    )
    results: MergeResults = {}
    for (row_id, _), outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, BackfillError | Row):
            results[row_id] = outcome
        elif isinstance(outcome, BaseException):
            raise outcome
    return results


async def merge_batched(
    items: Sequence[MergeItem],
    merge_batch: BatchMerge,
    merge_one: Callable[[int, MetaPatch], Awaitable[Row | None]],
    fetch_rows: Callable[[Sequence[int]], Awaitable[list[Row]]],
) -> MergeResults:
    """`Catalog.merge_many` for every backend: each row at most once (one statement cannot apply two
    patches to one row faithfully: ValueError); several rows in one `merge_batch`; one row, a backend
    without a batched merge, or a batch the backend rejected, row by row with `merge_one` (so only the
    row at fault fails). Rows asked for but not merged are read back to tell gone from unmergeable."""
    ids = [row_id for row_id, _ in items]
    if len(set(ids)) != len(ids):
        raise ValueError("merge_many names a row more than once")
    if len(items) > 1:
        try:
            rows = await merge_batch([{"id": i, "patch": p.patch, "defaults": p.defaults} for i, p in items])
        except UpstreamRejected:
            rows = None
        if rows is not None:
            return await _with_unmerged(fetch_rows, ids, rows)
    return await _merge_each(merge_one, items)


async def keyset_pages(
    fetch: PageFetcher, since_id: int, limit: int | None, page_size: int
) -> AsyncIterator[list[Row]]:
    """Keyset paging shared by every backend: `id > last order by id`, until a short page or `limit`.

    The next page is requested as soon as the current one arrives, so the catalog's latency overlaps
    the caller's work on the current page; at most two pages are held at a time.
    """
    remaining = limit
    if remaining is not None and remaining <= 0:
        return
    size = page_size if remaining is None else min(page_size, remaining)
    pending: asyncio.Future[list[Row]] | None = asyncio.ensure_future(fetch(since_id, size))
    try:
        while pending is not None:
            page = await pending
            pending = None
            if not page:
                return
            remaining = None if remaining is None else remaining - len(page)
            if len(page) >= size and (remaining is None or remaining > 0):
                size = page_size if remaining is None else min(page_size, remaining)
                pending = asyncio.ensure_future(fetch(page[-1].id, size))
            yield page
    finally:
        if pending is not None:  # the caller stopped early: the read ahead is not wanted any more
            pending.cancel()
            pending.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[list[Row]]) -> None:
    """Collect the outcome of an abandoned read ahead, so asyncio does not report it as lost."""
    if not future.cancelled():
        future.exception()


class Catalog(Protocol):
    async def count_candidates(self, since_id: int = 0) -> int | None:
        """How many candidate rows lie above `since_id`; None when the backend cannot tell cheaply."""

    async def count_enriched(self) -> int | None:
        """How many published rows carry a Jellyfin public URL (any value): the published rows that
        are not candidates. None when the backend cannot tell cheaply."""

    async def count_youtube_gaps(self) -> int | None:
        """How many rows were backfilled without the YouTube links they asked for (PMOVES.yt stayed
        unavailable): rows whose `meta.backfill_youtube_gap` is set. None when the backend cannot tell."""

    def stream_candidates(self, since_id: int = 0, limit: int | None = None) -> AsyncIterator[list[Row]]:
        """Candidate rows in id order, page by page, memory flat in the size of the catalog."""

    def republished_rows(self, run_id: str | None = None) -> AsyncIterator[list[Row]]:
        """Rows carrying the id of the event their backfill republished (`meta.backfill_event_id`),
        only those of run `run_id` when given (`meta.backfill_run_id`), in id order, page by page."""

    async def fetch_rows(self, ids: Sequence[int]) -> list[Row]:
        """The rows with these ids that exist, in any order."""

    async def get_row(self, row_id: int) -> Row | None:
        """The current row, or None when it is gone."""

    async def merge_meta(self, row_id: int, patch: MetaPatch) -> Row | None:
        """Merge `patch` into the row's meta without losing other keys; None when the row is gone."""

    async def merge_many(self, items: Sequence[MergeItem]) -> MergeResults:
        """`merge_meta` for many rows (each at most once, else ValueError), in one statement when the
        backend can. A failure of the whole call is raised (it concerns every row); when the backend
        rejects the batch, each row is merged on its own so only the row at fault carries the error."""

    async def aclose(self) -> None:
        """Release what the adapter holds (pools, connections)."""
