"""Title matching: only confident matches are accepted; ambiguity is never resolved by guessing."""

from __future__ import annotations

from datetime import date

import pytest

from backfill.core.matching import (
    DateHint,
    Matched,
    Unmatched,
    choose_match,
    date_hint,
    normalize_name,
    search_term,
)
from backfill.core.model import JellyfinItem, Row, normalize_item_id


def item(name: str, n: int, year: int | None = None, premiere: str | None = None) -> JellyfinItem:
    return JellyfinItem(id=f"{n:032x}", name=name, production_year=year, premiere_date=premiere)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Café Night", "cafe night"),
        ("Night_Drive.mp4", "night drive"),
        ("  The  End! ", "the end"),
        ("ÉTÉ", "ete"),
    ],
)
def test_normalized_names_fold_case_accents_punctuation_and_suffix(a: str, b: str) -> None:
    """Names compare equal across case, accents, punctuation, spacing and a media file suffix."""
    assert normalize_name(a) == normalize_name(b)


def test_search_term_drops_media_suffix() -> None:
    """Jellyfin names rarely carry the file suffix the studio title has."""
    assert search_term(" clip.MP4 ") == "clip"


def test_single_equal_name_matches() -> None:
    """One candidate whose normalised name equals the title is a confident match."""
    result = choose_match("Night Drive", [item("Night Drive 2", 1), item("night drive", 2)], None)
    assert isinstance(result, Matched)
    assert result.item.id == f"{2:032x}"


def test_two_equal_names_without_date_are_ambiguous() -> None:
    """Two items with the same name and nothing to tell them apart: unresolved, never a guess."""
    result = choose_match("Intro", [item("Intro", 1), item("intro", 2)], None)
    assert isinstance(result, Unmatched)
    assert result.reason == "ambiguous_match"


def test_date_separates_equal_names() -> None:
    """The row's year narrows equal names to the one that fits."""
    result = choose_match(
        "Intro", [item("Intro", 1, year=2020), item("Intro", 2, year=2023)], DateHint(year=2023)
    )
    assert isinstance(result, Matched)
    assert result.item.production_year == 2023


def test_single_candidate_fitting_the_date_matches_despite_different_name() -> None:
    """With a premiere date, a lone candidate that fits it is accepted."""
    hint = DateHint(year=2021, premiere=date(2021, 3, 4))
    result = choose_match(
        "Launch teaser", [item("Launch Teaser (final cut)", 1, premiere="2021-03-04T00:00:00Z")], hint
    )
    assert isinstance(result, Matched)


def test_lone_candidate_with_other_name_and_no_date_is_ambiguous() -> None:
    """A substring hit with another name is not confident without a date to confirm it."""
    result = choose_match("Launch", [item("Launch Party Highlights", 1)], None)
    assert isinstance(result, Unmatched)
    assert result.reason == "ambiguous_match"


def test_no_candidates_is_not_found() -> None:
    """An empty search result means the item is not in Jellyfin."""
    result = choose_match("Gone", [], None)
    assert isinstance(result, Unmatched)
    assert result.reason == "jellyfin_not_found"


def test_candidates_none_of_which_fit_the_date_are_not_found() -> None:
    """Every candidate premiered in another year: not this row's item."""
    result = choose_match("Intro", [item("Intro", 1, year=2010)], DateHint(year=2024))
    assert isinstance(result, Unmatched)
    assert result.reason == "jellyfin_not_found"


def test_date_hint_reads_premiere_and_year_from_meta() -> None:
    """`meta.premiere_date` gives date and year; `meta.production_year` alone gives a year; else none."""
    assert date_hint(Row(id=1, meta={"premiere_date": "2021-03-04T10:00:00Z"})) == DateHint(
        2021, date(2021, 3, 4)
    )
    assert date_hint(Row(id=1, meta={"production_year": "2019"})) == DateHint(2019, None)
    assert date_hint(Row(id=1, meta={"year": True})) is None
    assert date_hint(Row(id=1, meta=None)) is None


def test_premiere_window_is_one_day_either_side() -> None:
    """The search window tolerates time-zone shifts of the premiere date."""
    assert DateHint(2021, date(2021, 3, 4)).premiere_window() == (
        "2021-03-03T00:00:00Z",
        "2021-03-05T23:59:59Z",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A" * 32, "a" * 32),
        ("12345678-1234-1234-1234-1234567890ab", "123456781234123412341234567890ab"),
        ("0" * 32, None),
        ("00000000-0000-0000-0000-000000000000", None),
        ("xyz", None),
        ("", None),
        (None, None),
        (12345, None),
        ("../../Users", None),
    ],
)
def test_item_ids_are_validated_and_the_all_zero_id_refused(raw: object, expected: str | None) -> None:
    """Only real GUIDs pass; the all-zero id (Jellyfin's root folder) is never sent."""
    assert normalize_item_id(raw) == expected
