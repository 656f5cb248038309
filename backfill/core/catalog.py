"""The catalog's rules: which `studio_board` rows are candidates and how a meta patch merges.

Both catalog adapters (`backfill.adapters.postgrest`, `backfill.adapters.pgcatalog`) apply these; the
port they implement is `backfill.core.ports.Catalog`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from backfill.core.errors import BackfillError, CatalogConflict
from backfill.core.model import Row
from backfill.core.payload import MetaPatch

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
