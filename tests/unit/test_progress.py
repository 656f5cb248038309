"""Progress lines: an ETA from the rate so far once the total is known, never without a total."""

from __future__ import annotations

import io
import logging

import pytest

from producer.progress import Progress


def test_eta_follows_the_rate_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 110.0, 110.0])  # started at 100; 10 s later 50 of 200 are done: 5/s
    monkeypatch.setattr("producer.progress.time.monotonic", lambda: next(clock))
    progress = Progress("replay", 200, stream=io.StringIO())
    progress.done = 50
    assert progress.eta() == "ETA 0:00:30"


def test_no_eta_without_a_total_or_before_the_first_row() -> None:
    assert Progress("replay", None, stream=io.StringIO()).eta() == ""
    assert Progress("replay", 10, stream=io.StringIO()).eta() == ""


def test_the_log_line_carries_the_eta(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="producer")
    progress = Progress("replay", 1000, stream=io.StringIO(), every=0.0)
    progress.advance(10)
    assert "ETA" in caplog.records[-1].getMessage()
    assert "replay: 10/1000" in caplog.records[-1].getMessage()
