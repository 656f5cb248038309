"""`producer verify`'s verdicts: delivered, failed or not seen per event, and the embed's parts."""

from __future__ import annotations

from typing import Any

import pytest

from backfill.core.model import DeliveryRecord, Row
from producer.deliveries import (
    DELIVERED,
    FAILED,
    NOT_REPUBLISHED,
    NOT_SEEN,
    Report,
    by_event,
    check_row,
    delivery_state,
    embed_parts,
    render,
)

FULL = {
    "backfill_event_id": "e1",
    "jellyfin_public_url": "https://watch/web/#/details?id=x",
    "duration": 12.5,
    "thumbnail_url": "https://watch/Items/x/Images/Primary",
}


def record(success: bool | None, event: str = "e1", at: str | None = None) -> DeliveryRecord:
    return DeliveryRecord(
        published_event_id=event, webhook_success=success, channel="discord", published_at=at
    )


@pytest.mark.parametrize(
    ("successes", "state"),
    [
        ([True], DELIVERED),
        ([False], FAILED),
        ([], NOT_SEEN),
        ([None], NOT_SEEN),
        ([False, True], DELIVERED),  # a later success wins over an earlier failure
    ],
)
def test_delivery_state_from_the_records_of_one_event(successes: list[bool | None], state: str) -> None:
    assert delivery_state([record(s) for s in successes]) == state


@pytest.mark.parametrize(
    ("meta", "missing"),
    [
        (FULL, []),
        ({**FULL, "thumbnail_url": None}, ["thumbnail"]),
        ({**FULL, "duration": "12"}, ["duration"]),
        ({**FULL, "duration": True}, ["duration"]),
        ({k: v for k, v in FULL.items() if k != "jellyfin_public_url"}, ["deep_link"]),
        ({"backfill_event_id": "e1"}, ["deep_link", "duration", "thumbnail"]),
    ],
)
def test_embed_parts_are_what_publisher_discord_renders(meta: dict[str, Any], missing: list[str]) -> None:
    """Deep link, a numeric duration >= 0, a thumbnail URL."""
    parts = embed_parts(meta)
    assert [part for part, present in parts.items() if not present] == missing


def test_report_totals_and_exit_relevant_failures() -> None:
    rows = [
        Row(id=1, meta={**FULL, "backfill_event_id": "e1"}),
        Row(id=2, meta={**FULL, "backfill_event_id": "e2", "thumbnail_url": None}),
        Row(id=3, meta={**FULL, "backfill_event_id": "e3"}),
        Row(id=4, meta={"jellyfin_public_url": "x"}),  # metadata-only: no event
    ]
    records = by_event([record(True, "e1", "2026-01-01T00:00:00+00:00"), record(False, "e2")])
    report = Report("publisher_discord_metrics", {"run_id": "r"}, [check_row(row, records) for row in rows])
    assert [check.delivery for check in report.checks] == [DELIVERED, FAILED, NOT_SEEN, NOT_REPUBLISHED]
    assert report.failed == 1
    totals = report.totals()
    assert totals == {
        "rows": 4,
        DELIVERED: 1,
        FAILED: 1,
        NOT_SEEN: 1,
        NOT_REPUBLISHED: 1,
        "embed_incomplete": 1,
        "missing_deep_link": 0,
        "missing_duration": 0,
        "missing_thumbnail": 1,
    }
    data = report.as_dict()
    assert data["run_id"] == "r" and data["rows"][0]["published_at"] == "2026-01-01T00:00:00+00:00"
    assert data["rows"][1]["embed_missing"] == ["thumbnail"]
    text = render(report)
    assert "4 rows: 1 delivered, 1 failed, 1 not seen yet, 1 not republished" in text
    assert "row 2" in text and "missing thumbnail" in text
