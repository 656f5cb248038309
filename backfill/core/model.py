"""Domain records read from the outside: a `studio_board` row, a Jellyfin item, and a delivery
publisher-discord recorded.

msgspec decodes them straight from response bytes; unknown fields are ignored, so upstream additions
never break a worker.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_ZERO_ID = "0" * 32


class Row(msgspec.Struct, frozen=True):
    """One `studio_board` row (docs/upstreams.md §1). `meta` may be SQL null upstream: read `meta_dict`.

    `meta` is whatever JSON the column holds: a row whose meta is an array or a string must not make
    its whole page unreadable (the worker dead-letters that one row; `meta_object_problem`)."""

    id: int
    title: str | None = None
    namespace: str | None = None
    content_url: str | None = None
    status: str | None = None
    meta: Any = None
    created_at: str | None = None

    @property
    def meta_dict(self) -> dict[str, Any]:
        return self.meta if isinstance(self.meta, dict) else {}

    @property
    def meta_object_problem(self) -> str | None:
        """Why `meta` cannot be merged into (it is JSON but not an object), or None when it can."""
        if self.meta is None or isinstance(self.meta, dict):
            return None
        kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(self.meta), "a number")
        return f"meta is {kind}, not a JSON object: fix the row's meta, then replay"


class UserData(msgspec.Struct, frozen=True, rename="pascal"):
    """The configured user's data for an item (sent when the request names a `userId`)."""

    played: bool = False


class JellyfinItem(msgspec.Struct, frozen=True, rename="pascal"):
    """The subset of Jellyfin's BaseItemDto the backfill reads (PascalCase, nulls omitted upstream)."""

    id: str
    name: str | None = None
    server_id: str | None = None
    type: str | None = None
    path: str | None = None
    run_time_ticks: int | None = None
    production_year: int | None = None
    premiere_date: str | None = None
    image_tags: dict[str, str] | None = None
    tags: list[str] | None = None
    user_data: UserData | None = None

    @property
    def primary_image_tag(self) -> str | None:
        return (self.image_tags or {}).get("Primary")

    @property
    def played(self) -> bool:
        """Whether `JELLYFIN_USER_ID` has played the item (PMOVES' live publisher reports only that)."""
        return self.user_data is not None and self.user_data.played


class SearchResult(msgspec.Struct, frozen=True, rename="pascal"):
    items: list[JellyfinItem] = []
    total_record_count: int = 0


class DeliveryRecord(msgspec.Struct, frozen=True):
    """One row of publisher-discord's metrics table (`DISCORD_METRICS_TABLE`), as read (other columns
    are not needed)."""

    published_event_id: str
    webhook_success: bool | None = None
    channel: str | None = None
    published_at: str | None = None


def normalize_item_id(raw: object) -> str | None:
    """Return Jellyfin's canonical id (32 lowercase hex) or None when `raw` is not a usable id.

    Accepts the dashed GUID form. The all-zero id is refused: Jellyfin answers it with the root
    folder instead of 404 (docs/upstreams.md §2), which would enrich a row with the wrong item.
    """
    if not isinstance(raw, str):
        return None
    candidate = raw.strip().replace("-", "").lower()
    if not _HEX32.match(candidate) or candidate == _ZERO_ID:
        return None
    return candidate
