"""`producer status` rendering and the pause/resume messages, as plain functions."""

from __future__ import annotations

import pytest
from nats.aio.client import ServerVersion
from nats.js.errors import APIError

from backfill.adapters.jetstream.control import consumer_pause_supported, pause_refused
from backfill.adapters.jetstream.layout import build_layout
from backfill.settings import NatsSettings
from producer.status import Status, render

LAYOUT = build_layout(NatsSettings.model_validate({"BACKFILL_STREAM": "BF", "BACKFILL_CONSUMER": "workers"}))


def test_status_table_shows_rows_enriched_against_rows_still_missing() -> None:
    """One line `rows enriched / still missing  N / M`, aligned with the others."""
    text = render(Status(5, 2, 1, False, {"ambiguous_match": 3}, rows_enriched=120, rows_missing=40))
    lines = text.splitlines()
    assert lines[0] == "running"
    assert "rows enriched / still missing  120 / 40" in lines
    values = [line[31:] for line in lines[1:]]  # one value column after the longest label
    assert values == ["5", "2", "1", "120 / 40", "-", "-", "ambiguous_match=3"]


def test_status_table_shows_a_dash_for_a_count_the_catalog_cannot_give() -> None:
    """None (unknown) renders as `-`, never as 0."""
    text = render(Status(0, 0, 0, True, rows_enriched=None, rows_missing=7))
    assert text.splitlines()[0] == "paused"
    assert "rows enriched / still missing  - / 7" in text.splitlines()


@pytest.mark.parametrize(
    ("version", "pauses"),
    [
        ("2.9.25", False),
        ("2.10.26", False),  # PMOVES' nats:2.10-alpine: the pause switch alone
        ("2.11.0", True),
        ("2.15.1", True),
        ("3.0.0", True),
        ("0.0.0-unknown", True),  # unknown: asked, and the server's own answer decides
    ],
)
def test_the_consumer_itself_is_paused_from_2_11_on(version: str, pauses: bool) -> None:
    assert consumer_pause_supported(ServerVersion(version)) is pauses


def test_status_table_leaves_its_warnings_to_stderr() -> None:
    warning = "stream BF is kept in memory: a nats-server restart loses every message in it"
    text = render(Status(0, 0, 0, False, warnings=[warning]))
    assert "warning" not in text
    assert text.splitlines()[0] == "running"


@pytest.mark.parametrize(
    ("err_code", "description", "names"),
    [
        (10014, "consumer not found", "consumer 'workers' not found on stream 'BF'"),
        (10059, "stream not found", "stream 'BF' not found"),
    ],
)
def test_a_missing_consumer_or_stream_is_named_not_blamed_on_the_server_version(
    err_code: int, description: str, names: str
) -> None:
    """Not found says what is missing and which settings name it; it never mentions 2.11."""
    message = pause_refused("pause", LAYOUT, APIError(404, description, err_code))
    assert message.startswith(f"pause failed: {names} (JetStream error {err_code}: {description})")
    assert "BACKFILL_STREAM and BACKFILL_CONSUMER" in message
    assert "2.11" not in message


def test_any_other_refusal_is_quoted_with_its_code() -> None:
    """An unexpected API error is shown as JetStream gave it."""
    message = pause_refused("resume", LAYOUT, APIError(500, "insufficient resources", 10023))
    assert message == "resume failed: JetStream error 10023: insufficient resources."
