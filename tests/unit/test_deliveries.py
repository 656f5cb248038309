"""`producer verify`'s verdicts: per row delivered, failed or not seen (and how many embeds the channel
shows), the embed's parts, and "complete as the item allows" apart from a miss."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from backfill.core.embeds import SeenEmbed, snowflake_at
from backfill.core.model import DeliveryRecord, Row
from producer.deliveries import (
    AS_ITEM_ALLOWS,
    COMPLETE,
    DELIVERED,
    DISCORD,
    FAILED,
    INCOMPLETE,
    METRICS_TABLE,
    NOT_REPUBLISHED,
    NOT_SEEN,
    Report,
    RowCheck,
    by_event,
    channel_checks,
    check_row,
    delivery_state,
    event_embed,
    render,
)

FULL = {
    "backfill_event_id": "e1",
    "jellyfin_item_id": "a" * 32,
    "jellyfin_public_url": "https://watch/web/#/details?id=x",
    "duration": 12.5,
    "thumbnail_url": "https://watch/Items/x/Images/Primary",
    "backfill_item_lacks": [],
}
ALL = {"link": True, "duration": True, "jellyfin": True, "thumbnail": True}


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
        ({k: v for k, v in FULL.items() if k != "jellyfin_public_url"}, ["link", "jellyfin"]),
        ({**FULL, "jellyfin_public_url": None, "public_url": "https://cdn/x"}, ["jellyfin"]),
        ({"backfill_event_id": "e1"}, ["link", "duration", "jellyfin", "thumbnail"]),
    ],
)
def test_the_event_embed_is_what_publisher_discord_renders_from_it(
    meta: dict[str, Any], missing: list[str]
) -> None:
    """The link (public URL, else the deep link), a numeric duration >= 0, the Jellyfin field (item id
    and deep link), a thumbnail URL."""
    assert [part for part, present in event_embed(meta).items() if not present] == missing


@pytest.mark.parametrize(
    ("embed", "lacks", "verdict", "missed"),
    [
        (ALL, frozenset(), COMPLETE, []),
        ({**ALL, "duration": False}, frozenset({"duration"}), AS_ITEM_ALLOWS, []),
        ({**ALL, "thumbnail": False}, frozenset({"thumbnail", "duration"}), AS_ITEM_ALLOWS, []),
        ({**ALL, "thumbnail": False}, frozenset({"duration"}), INCOMPLETE, ["thumbnail"]),
        ({**ALL, "thumbnail": False}, None, INCOMPLETE, ["thumbnail"]),  # backfilled before the record
        (None, frozenset(), None, []),
    ],
)
def test_a_part_the_item_lacks_is_not_a_miss(
    embed: dict[str, bool] | None, lacks: frozenset[str] | None, verdict: str | None, missed: list[str]
) -> None:
    check = RowCheck(1, "e1", DELIVERED, embed, item_lacks=lacks)
    assert (check.verdict, check.missed) == (verdict, missed)


def seen(*minutes: int, parts: dict[str, bool] = ALL) -> list[SeenEmbed]:
    return [SeenEmbed(snowflake_at(datetime(2026, 12, 6, 10, m, tzinfo=UTC)), parts) for m in minutes]


def test_channel_checks_count_the_embeds_and_judge_the_first() -> None:
    """One embed: delivered; none: not seen; two: delivered twice (a duplicate); no event: not republished."""
    rows = [
        Row(id=i, content_url=f"s3://outputs/{i}.mp4", meta={**FULL, "backfill_event_id": f"e{i}"})
        for i in (1, 2, 3)
    ]
    rows.append(Row(id=4, meta={"jellyfin_public_url": "x"}))
    checks = channel_checks(rows, {1: seen(1), 2: [], 3: seen(2, 3, parts={**ALL, "duration": False})})
    assert [(c.delivery, c.embeds_seen, c.duplicated) for c in checks] == [
        (DELIVERED, 1, False),
        (NOT_SEEN, 0, False),
        (DELIVERED, 2, True),
        (NOT_REPUBLISHED, None, False),
    ]
    assert checks[0].seen_at == "2026-12-06T10:01:00+00:00"
    assert checks[2].missed == ["duration"]
    assert [c.settled for c in checks] == [True, False, False, True]


def test_lookalike_rows_are_delivered_when_the_channel_shows_one_embed_each() -> None:
    same = {**FULL, "artifact_uri": "s3://outputs/x.mp4"}
    rows = [
        Row(id=1, meta={**same, "backfill_event_id": "e1"}),
        Row(id=2, meta={**same, "backfill_event_id": "e2"}),
    ]
    both = channel_checks(rows, {1: seen(1, 2), 2: seen(1, 2)})
    assert [(c.delivery, c.duplicated, c.same_embed_as) for c in both] == [
        (DELIVERED, False, (2,)),
        (DELIVERED, False, (1,)),
    ]
    one = channel_checks(rows, {1: seen(1), 2: seen(1)})
    assert [c.delivery for c in one] == [NOT_SEEN, NOT_SEEN]  # which of the two got it cannot be told


def test_report_totals_shape_and_exit_relevant_rows() -> None:
    rows = [
        Row(id=1, meta={**FULL, "backfill_event_id": "e1"}),
        Row(id=2, meta={**FULL, "backfill_event_id": "e2", "thumbnail_url": None}),
        Row(
            id=3,
            meta={**FULL, "backfill_event_id": "e3", "duration": None, "backfill_item_lacks": ["duration"]},
        ),
        Row(id=4, meta={"jellyfin_public_url": "x"}),  # metadata-only: no event
    ]
    records = by_event(
        [record(True, "e1", "2026-01-01T00:00:00+00:00"), record(False, "e2"), record(True, "e3")]
    )
    report = Report(
        METRICS_TABLE, "publisher_discord_metrics", {"run_id": "r"}, [check_row(r, records) for r in rows]
    )
    assert [check.delivery for check in report.checks] == [DELIVERED, FAILED, DELIVERED, NOT_REPUBLISHED]
    assert report.unsettled == 1
    assert report.totals() == {
        "rows": 4,
        DELIVERED: 2,
        FAILED: 1,
        NOT_SEEN: 0,
        NOT_REPUBLISHED: 1,
        "duplicated": 0,
        "embed_complete": 1,
        "embed_complete_as_item_allows": 1,
        "embed_incomplete": 1,
        "missing_link": 0,
        "missing_duration": 0,
        "missing_jellyfin": 0,
        "missing_thumbnail": 1,
    }
    data = report.as_dict()
    assert (data["source"], data["origin"], data["run_id"]) == (
        METRICS_TABLE,
        "publisher_discord_metrics",
        "r",
    )
    assert set(data["rows"][0]) == {
        "row_id", "event_id", "delivery", "embeds_seen", "seen_at", "embed", "embed_verdict", "embed_missing", "item_lacks",
    }  # fmt: skip
    assert data["rows"][0]["seen_at"] == "2026-01-01T00:00:00+00:00"
    assert data["rows"][2]["item_lacks"] == ["duration"]
    text = render(report)
    assert "4 rows: 2 delivered, 1 failed, 0 not seen, 1 not republished, 0 delivered more than once" in text
    assert "complete as the item allows (the item has no duration)" in text
    assert "incomplete: missing thumbnail" in text


def test_nothing_recorded_since_the_run_began_is_said_apart_from_not_seen() -> None:
    """Rows not seen, and the table has no record at all since the run began: it is not recording."""
    report = Report(METRICS_TABLE, "publisher_discord_metrics", {}, [RowCheck(1, "e1", NOT_SEEN, ALL)])
    report.window_start, report.recording = "2026-12-06T09:50:00+00:00", False
    assert "has recorded nothing in publisher_discord_metrics since the run began" in render(report)
    report.recording = True
    assert "recorded nothing" not in render(report)


def test_the_discord_report_names_the_channel_and_the_embeds_seen() -> None:
    report = Report(DISCORD, "555", {"run_id": "r"}, [RowCheck(1, "e1", DELIVERED, ALL, embeds_seen=2)])
    report.window_start = "2026-12-06T09:50:00+00:00"
    text = render(report)
    assert "the Discord channel 555, messages since 2026-12-06T09:50:00+00:00" in text
    assert "delivered (2 embeds) DUPLICATE" in text
    assert report.unsettled == 1
