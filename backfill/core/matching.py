"""Choosing a Jellyfin item for a row from a title search: confident matches only, never a guess."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from backfill.core.model import JellyfinItem, Row, normalize_item_id

_MEDIA_SUFFIX = re.compile(
    r"\.(mp4|mkv|mov|webm|avi|m4v|mp3|m4a|flac|wav|ogg|png|jpe?g|webp|gif)$", re.IGNORECASE
)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_name(name: str) -> str:
    """Fold case, accents, punctuation and a media file suffix, so 'Café_Night.mp4' == 'cafe night'."""
    stripped = _MEDIA_SUFFIX.sub("", name.strip())
    decomposed = unicodedata.normalize("NFKD", stripped)
    no_marks = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", no_marks.casefold()).strip()


def search_term(title: str) -> str:
    """What to send as Jellyfin's `searchTerm`: the title without a media file suffix."""
    return _MEDIA_SUFFIX.sub("", title.strip()).strip()


@dataclass(frozen=True)
class DateHint:
    """A row's own knowledge of when the item premiered, used to narrow and confirm a search."""

    year: int | None = None
    premiere: date | None = None

    def premiere_window(self) -> tuple[str, str] | None:
        """`minPremiereDate`/`maxPremiereDate` one day either side: premiere dates cross time zones."""
        if self.premiere is None:
            return None
        low, high = self.premiere - timedelta(days=1), self.premiere + timedelta(days=1)
        return f"{low.isoformat()}T00:00:00Z", f"{high.isoformat()}T23:59:59Z"


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _parse_year(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 1800 <= value <= 2200:
        return value
    if isinstance(value, str) and value.isdigit():
        return _parse_year(int(value))
    return None


def date_hint(row: Row) -> DateHint | None:
    """Read `meta.premiere_date` (or `release_date`) and `meta.production_year` (or `year`)."""
    meta = row.meta_dict
    premiere = _parse_date(meta.get("premiere_date") or meta.get("release_date"))
    year = _parse_year(meta.get("production_year") or meta.get("year"))
    if premiere is None and year is None:
        return None
    return DateHint(year=year or (premiere.year if premiere else None), premiere=premiere)


def fits_date(item: JellyfinItem, hint: DateHint) -> bool:
    item_date = _parse_date(item.premiere_date)
    if hint.premiere is not None and item_date is not None:
        return abs((item_date - hint.premiere).days) <= 1  # premiere dates travel through time zones
    item_year = item.production_year or (item_date.year if item_date else None)
    return hint.year is not None and item_year == hint.year


@dataclass(frozen=True)
class Matched:
    item: JellyfinItem


@dataclass(frozen=True)
class Unmatched:
    reason: str  # "jellyfin_not_found" | "ambiguous_match"
    detail: str


def choose_match(title: str, candidates: list[JellyfinItem], hint: DateHint | None) -> Matched | Unmatched:
    """Accept equal normalised names (one, or one that fits the date), or a single date-fitting candidate."""
    if not candidates:
        return Unmatched("jellyfin_not_found", f"no Jellyfin item matches title {title!r}")
    wanted = normalize_name(title)
    pool = [c for c in candidates if fits_date(c, hint)] if hint else candidates
    same_name = [c for c in pool if c.name is not None and normalize_name(c.name) == wanted]
    if len(same_name) == 1:
        return Matched(same_name[0])
    if len(same_name) > 1:
        ids = ", ".join(c.id for c in same_name[:5])
        return Unmatched("ambiguous_match", f"{len(same_name)} items named {title!r}: {ids}")
    if hint is not None and len(pool) == 1:
        return Matched(pool[0])
    if hint is not None and not pool:
        return Unmatched("jellyfin_not_found", f"no item for {title!r} fits the row's date")
    names = ", ".join(repr(c.name) for c in pool[:5])
    return Unmatched("ambiguous_match", f"no confident match for {title!r} among {len(pool)}: {names}")


def could_match(row: Row, item: JellyfinItem) -> bool:
    """Whether `item` (new or changed in Jellyfin) could let `row` resolve now: it is the row's own
    `meta.jellyfin_item_id`, or the row's title search would list it (its folded name contains the
    folded search term, as Jellyfin's `searchTerm` matches) and it fits the row's date when the row has
    one. A superset of what `choose_match` accepts: it decides whether a lookup is worth another try."""
    own = normalize_item_id(row.meta_dict.get("jellyfin_item_id"))
    if own is not None and normalize_item_id(item.id) == own:
        return True
    title = row.title or row.meta_dict.get("title")
    if not isinstance(title, str) or item.name is None:
        return False
    term = normalize_name(search_term(title))
    if not term or term not in normalize_name(item.name):
        return False
    hint = date_hint(row)
    return hint is None or fits_date(item, hint)
