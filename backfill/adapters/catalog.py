"""What both catalog adapters share: keyset paging and batched merges that fail row by row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from backfill.core.catalog import BatchMerge, MergeItem, MergeResults, PageFetcher, unmerged
from backfill.core.errors import BackfillError, UpstreamRejected
from backfill.core.model import Row
from backfill.core.payload import MetaPatch


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
