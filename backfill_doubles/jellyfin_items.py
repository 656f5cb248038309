"""Jellyfin's item catalogue semantics, with no HTTP in them (docs/upstreams.md §2).

- `parse_guid` accepts what ASP.NET binds as a `Guid` here (32 hex or dashed 8-4-4-4-12, any case).
- `render_item` turns a stored item into the wire DTO: PascalCase, nulls omitted, and in listings the
  optional fields (`Path`, `Tags`, `Genres`, `ProviderIds`, ...) only when asked for with `fields=`.
- `parse_query` / `run_query` implement the `GET /Items` filters the backfill uses: `searchTerm`
  (substring, ranked exact > prefix > contains), `includeItemTypes`, `years`, `min/maxPremiereDate`
  (inclusive), `ids` (invalid ones silently dropped; order not kept), `startIndex`, `limit`,
  `enableUserData` (the user's `UserData` is in every DTO unless it is `false`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

ZERO_ID = "0" * 32
_GUID = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$", re.I)
# Sent only when named in `fields=` on a listing; `GET /Items/{id}` always sends everything.
OPTIONAL_FIELDS = frozenset({"Path", "Tags", "Genres", "ProviderIds", "Overview", "DateCreated"})


class QueryError(ValueError):
    """A query parameter that ASP.NET model binding would reject (-> 400 problem+json)."""

    def __init__(self, param: str, value: str) -> None:
        super().__init__(f"The value '{value}' is not valid.")
        self.param = param
        self.value = value


def parse_guid(text: str) -> str | None:
    """The 32-hex lowercase form of a GUID, or None when `text` is not one."""
    if not _GUID.match(text):
        return None
    return text.replace("-", "").lower()


def format_premiere(value: date | datetime | str) -> str:
    """Jellyfin's wire form of a date: `2021-03-04T00:00:00.0000000Z`."""
    moment = parse_instant(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def parse_instant(text: str) -> datetime:
    """An ISO-8601 date or date-time as an aware UTC datetime (naive input is taken as UTC)."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def render_item(item: Mapping[str, Any], fields: frozenset[str] | None) -> dict[str, Any]:
    """The DTO for `item`; `fields=None` means every field (single-item lookup)."""
    wanted = None if fields is None else {name.lower() for name in fields}
    dto: dict[str, Any] = {}
    for key, value in item.items():
        if value is None:
            continue
        if wanted is not None and key in OPTIONAL_FIELDS and key.lower() not in wanted:
            continue
        dto[key] = value
    return dto


@dataclass(frozen=True)
class ItemQuery:
    """The parsed `GET /Items` parameters this double understands."""

    recursive: bool = False
    search_term: str | None = None
    include_types: frozenset[str] = frozenset()
    years: frozenset[int] = frozenset()
    min_premiere: datetime | None = None
    max_premiere: datetime | None = None
    ids: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()
    start_index: int = 0
    limit: int | None = None
    enable_user_data: bool = True  # `enableUserData=false` leaves `UserData` out of a listing


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _parse_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name.lower())
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise QueryError(name, raw) from None


def _parse_years(params: Mapping[str, str]) -> frozenset[int]:
    years = set()
    for part in _split(params.get("years")):
        try:
            years.add(int(part))
        except ValueError:
            raise QueryError("years", part) from None
    return frozenset(years)


def _parse_date(params: Mapping[str, str], name: str) -> datetime | None:
    raw = params.get(name.lower())
    if not raw:
        return None
    try:
        return parse_instant(raw)
    except ValueError:
        raise QueryError(name, raw) from None


def parse_query(params: Mapping[str, str]) -> ItemQuery:
    """Parse lower-cased query parameters; raises `QueryError` where ASP.NET binding fails."""
    ids = {parsed for part in _split(params.get("ids")) if (parsed := parse_guid(part))}
    return ItemQuery(
        recursive=params.get("recursive", "").lower() == "true",
        search_term=params.get("searchterm") or None,
        include_types=frozenset(t.lower() for t in _split(params.get("includeitemtypes"))),
        years=_parse_years(params),
        min_premiere=_parse_date(params, "minPremiereDate"),
        max_premiere=_parse_date(params, "maxPremiereDate"),
        ids=frozenset(ids),
        fields=frozenset(_split(params.get("fields"))),
        start_index=_parse_int(params, "startIndex") or 0,
        limit=_parse_int(params, "limit"),
        enable_user_data=params.get("enableuserdata", "true").lower() != "false",
    )


def _premiere_in_range(item: Mapping[str, Any], query: ItemQuery) -> bool:
    if query.min_premiere is None and query.max_premiere is None:
        return True
    raw = item.get("PremiereDate")
    if not raw:
        return False
    moment = parse_instant(raw)
    if query.min_premiere is not None and moment < query.min_premiere:
        return False
    return query.max_premiere is None or moment <= query.max_premiere


def matches(item: Mapping[str, Any], query: ItemQuery) -> bool:
    """Whether `item` passes every filter of `query`."""
    if query.ids and item.get("Id") not in query.ids:
        return False
    if query.include_types and str(item.get("Type", "")).lower() not in query.include_types:
        return False
    if query.years and item.get("ProductionYear") not in query.years:
        return False
    if query.search_term and query.search_term.casefold() not in str(item.get("Name", "")).casefold():
        return False
    return _premiere_in_range(item, query)


def _search_rank(name: str, term: str) -> int:
    folded, wanted = name.casefold(), term.casefold()
    if folded == wanted:
        return 0
    return 1 if folded.startswith(wanted) else 2


def _sort_key(query: ItemQuery) -> Any:
    def key(item: Mapping[str, Any]) -> tuple[int, str, str]:
        name = str(item.get("Name", ""))
        rank = _search_rank(name, query.search_term) if query.search_term else 0
        return rank, name.casefold(), str(item.get("Id", ""))

    return key


def run_query(items: Iterable[Mapping[str, Any]], query: ItemQuery) -> tuple[list[Mapping[str, Any]], int]:
    """The page of matching items and the total count before paging."""
    found = sorted((item for item in items if matches(item, query)), key=_sort_key(query))
    start = max(query.start_index, 0)
    end = None if query.limit is None else start + max(query.limit, 0)
    return found[start:end], len(found)
