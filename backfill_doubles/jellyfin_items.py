"""Jellyfin's item catalogue semantics, with no HTTP in them (docs/upstreams.md §2).

- `parse_guid` accepts what ASP.NET binds as a `Guid` here (32 hex or dashed 8-4-4-4-12, any case).
- `render_item` turns a stored item into the wire DTO: PascalCase, nulls omitted, and in listings the
  optional fields (`Path`, `Tags`, `Genres`, `ProviderIds`, ...) only when asked for with `fields=`.
- `parse_query` / `run_query` implement the `GET /Items` filters the backfill uses: `searchTerm`
  (substring, ranked exact > prefix > contains), `includeItemTypes`, `years`, `min/maxPremiereDate`
  (inclusive), `ids` (invalid ones silently dropped; order not kept), `startIndex`, `limit`,
  `enableUserData` (the user's `UserData` is in every DTO unless it is `false`), `sortBy` / `sortOrder`
  (`DateCreated`, `SortName`; unknown names dropped as ASP.NET's comma-list binder drops them), and
  `minDateLastSaved` / `minDateLastSavedForUser` (docs/upstreams.md §2).
- "Saved since": an item's `DateLastSaved` is internal (`_DateLastSaved`, never in a DTO). Jellyfin sets
  it whenever it saves the item after creation (a scan's metadata refresh, an edit), never on creation
  alone, and a filter never matches an item without one. Up to 10.10 the SQL of `minDateLastSaved`
  compares with the *ForUser* parameter, so `minDateLastSaved` alone matches nothing and both together
  filter by `minDateLastSavedForUser` (`legacy_saved_filter`); from 10.11 each filters by its own value.
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
SAVED = "_DateLastSaved"  # internal, like every key starting with "_": never rendered
# The `sortBy` names this double sorts by (DTO key); Jellyfin knows more, which the backfill never sends.
SORT_KEYS = {"datecreated": "DateCreated", "sortname": "Name", "name": "Name"}


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
        if value is None or key.startswith("_"):
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
    min_saved: datetime | None = None  # `minDateLastSaved`
    min_saved_for_user: datetime | None = None  # `minDateLastSavedForUser`
    sort: tuple[tuple[str, bool], ...] = ()  # (DTO key, descending) from `sortBy` / `sortOrder`


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


def _parse_sort(params: Mapping[str, str]) -> tuple[tuple[str, bool], ...]:
    """`RequestHelpers.GetOrderBy`: each `sortBy` with the `sortOrder` at its index, else the first
    order given, else ascending. Values the enum binders cannot read are dropped, not refused."""
    keys = [SORT_KEYS[name.lower()] for name in _split(params.get("sortby")) if name.lower() in SORT_KEYS]
    words = [word.lower() for word in _split(params.get("sortorder"))]
    orders = [word == "descending" for word in words if word in {"ascending", "descending"}]
    default = orders[0] if orders else False
    return tuple((key, orders[i] if i < len(orders) else default) for i, key in enumerate(keys))


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
        min_saved=_parse_date(params, "minDateLastSaved"),
        min_saved_for_user=_parse_date(params, "minDateLastSavedForUser"),
        sort=_parse_sort(params),
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


def _saved_since(item: Mapping[str, Any], query: ItemQuery, legacy: bool) -> bool:
    """`DateLastSaved not null and DateLastSaved >= bound` for each bound given. `legacy` (up to
    10.10): both clauses are bound to `minDateLastSavedForUser`, NULL when only the other is given."""
    given = [bound for bound in (query.min_saved, query.min_saved_for_user) if bound is not None]
    bounds = [query.min_saved_for_user for _ in given] if legacy else given
    saved: datetime | None = item.get(SAVED)
    return all(bound is not None and saved is not None and saved >= bound for bound in bounds)


def matches(item: Mapping[str, Any], query: ItemQuery, legacy_saved_filter: bool = False) -> bool:
    """Whether `item` passes every filter of `query`."""
    if not _saved_since(item, query, legacy_saved_filter):
        return False
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


def _sorted(found: list[Mapping[str, Any]], query: ItemQuery) -> list[Mapping[str, Any]]:
    """The default order, then each `sortBy` key from the last to the first (a stable sort)."""
    found.sort(key=_sort_key(query))
    for key, descending in reversed(query.sort):
        found.sort(key=lambda item: str(item.get(key) or "").casefold(), reverse=descending)
    return found


def run_query(
    items: Iterable[Mapping[str, Any]], query: ItemQuery, legacy_saved_filter: bool = False
) -> tuple[list[Mapping[str, Any]], int]:
    """The page of matching items and the total count before paging."""
    found = _sorted([item for item in items if matches(item, query, legacy_saved_filter)], query)
    start = max(query.start_index, 0)
    end = None if query.limit is None else start + max(query.limit, 0)
    return found[start:end], len(found)
