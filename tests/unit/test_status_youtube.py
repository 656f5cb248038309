"""`producer status` lists the rows backfilled without the YouTube links they asked for."""

from __future__ import annotations

from dataclasses import asdict

from producer.status import Status, render


def test_the_gap_line_appears_aligned_when_rows_have_a_gap() -> None:
    text = render(Status(0, 0, 0, False, rows_enriched=10, rows_missing=0, rows_youtube_gap=3))
    assert "rows with a YouTube link gap   3" in text.splitlines()
    assert asdict(Status(0, 0, 0, False, rows_youtube_gap=3))["rows_youtube_gap"] == 3


def test_no_gap_line_when_there_is_none_or_it_is_unknown() -> None:
    """Nothing to say without linking (0), or when the catalog cannot count (None, `-` in JSON null)."""
    for gaps in (0, None):
        assert "YouTube" not in render(Status(0, 0, 0, False, rows_youtube_gap=gaps))
