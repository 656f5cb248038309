"""Payload building: the content.published.v1 fields historic events lack, derived like PMOVES does."""

from __future__ import annotations

import pytest

from backfill.core.model import JellyfinItem, Row
from backfill.core.payload import (
    Enrichment,
    LinkConfig,
    build_meta_patch,
    build_payload,
    correlation_id,
    duration_seconds,
    jellyfin_public_url,
    merge_tags,
    primary_image_url,
    published_path,
)

LINKS = LinkConfig(public_base="https://watch.example.org", server_id="cfgserver")
ITEM = JellyfinItem(
    id="a" * 32,
    name="Night Drive",
    server_id="srv1",
    run_time_ticks=1_234_000_000,
    image_tags={"Primary": "t1"},
)


def enrichment(item: JellyfinItem = ITEM, thumb: str | None = "https://t/x.png") -> Enrichment:
    return Enrichment(item=item, resolved_by="jellyfin_id", thumbnail_url=thumb, thumbnail_source="jellyfin")


@pytest.mark.parametrize(
    ("ticks", "seconds"),
    [(0, 0.0), (10_000_000, 1.0), (1_234_000_000, 123.4), (15, 0.0), (None, None), (-5, None)],
)
def test_duration_is_run_time_ticks_over_ten_million(ticks: int | None, seconds: float | None) -> None:
    """RunTimeTicks / 10^7 seconds; absent or negative ticks give no duration."""
    assert duration_seconds(ticks) == seconds


def test_public_url_uses_public_base_and_item_server_id() -> None:
    """The deep link is on the public base with the item's ServerId, never the internal Jellyfin URL."""
    assert (
        jellyfin_public_url(ITEM, LINKS)
        == f"https://watch.example.org/web/#/details?id={'a' * 32}&serverId=srv1"
    )


def test_public_url_falls_back_to_configured_server_id_then_none() -> None:
    """Without ServerId on the item the configured one is used; without either the parameter is left out."""
    item = JellyfinItem(id="b" * 32)
    assert jellyfin_public_url(item, LINKS).endswith("&serverId=cfgserver")
    bare = LinkConfig(public_base="https://w")
    assert jellyfin_public_url(item, bare) == f"https://w/web/#/details?id={'b' * 32}"


def test_deep_link_format_is_configurable() -> None:
    """Deployments still on the legacy index.html#! links can configure that format."""
    links = LinkConfig(public_base="https://w", deep_link_format="{base}/web/index.html#!/details?id={id}")
    assert jellyfin_public_url(ITEM, links) == f"https://w/web/index.html#!/details?id={'a' * 32}"


def test_primary_image_url_only_when_the_item_has_a_primary_tag() -> None:
    """Public-base image URL with the tag (no auth needed, so Discord can fetch it)."""
    url = primary_image_url(ITEM, LINKS)
    assert url == f"https://watch.example.org/Items/{'a' * 32}/Images/Primary?tag=t1&maxWidth=640"
    assert primary_image_url(JellyfinItem(id="c" * 32, image_tags={"Backdrop": "x"}), LINKS) is None


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (None, ["backfill"]),
        (["a", "b"], ["a", "b", "backfill"]),
        (["backfill", "a"], ["backfill", "a"]),
        (["a", "a", 3, ""], ["a", "backfill"]),
        ("solo", ["solo", "backfill"]),
        ({"not": "a list"}, ["backfill"]),
    ],
)
def test_tags_are_existing_plus_backfill_without_duplicates(existing: object, expected: list[str]) -> None:
    """Existing string tags keep their order; `backfill` is appended once."""
    assert merge_tags(existing) == expected


@pytest.mark.parametrize(
    ("meta", "content_url", "expected"),
    [
        ({"published_path": "pmoves/x.mp4"}, "s3://outputs/a/b.mp4", "pmoves/x.mp4"),
        ({}, "s3://outputs/a/b.mp4", "a/b.mp4"),
        ({"artifact_uri": "s3://outputs/z.png"}, None, "z.png"),
        ({}, "https://cdn/x.mp4", None),
    ],
)
def test_published_path_prefers_meta_then_artifact_key(
    meta: dict, content_url: str | None, expected: str | None
) -> None:
    """`meta.published_path`, else the key part of the s3:// artifact URI."""
    row = Row(id=1, content_url=content_url, meta=meta)
    artifact = meta.get("artifact_uri") or content_url
    assert published_path(row, artifact) == expected


def test_payload_carries_row_fields_jellyfin_fields_and_meta() -> None:
    """Namespace from the row, tags plus backfill, Jellyfin fields on top and in meta, meta keys kept."""
    row = Row(
        id=7,
        title="Night Drive",
        namespace="studio",
        content_url="s3://outputs/v/night.mp4",
        status="published",
        meta={"tags": ["car"], "description": "d", "public_url": "https://cdn/x", "other_service": {"k": 1}},
    )
    payload = build_payload(row, enrichment(), LINKS, "pmoves")
    assert payload["artifact_uri"] == "s3://outputs/v/night.mp4"
    assert payload["published_path"] == "v/night.mp4"
    assert payload["namespace"] == "studio"
    assert payload["tags"] == ["car", "backfill"]
    assert payload["title"] == "Night Drive"
    assert payload["description"] == "d"
    assert payload["public_url"] == "https://cdn/x"
    assert payload["duration"] == 123.4
    assert payload["jellyfin_item_id"] == "a" * 32
    assert payload["thumbnail_url"] == "https://t/x.png"
    assert payload["meta"]["other_service"] == {"k": 1}
    assert payload["meta"]["jellyfin_public_url"] == payload["jellyfin_public_url"]


@pytest.mark.parametrize(
    ("row_ns", "meta_ns", "expected"), [("a", "b", "a"), (None, "b", "b"), (None, None, "pmoves-default")]
)
def test_namespace_row_then_meta_then_default(row_ns: str | None, meta_ns: str | None, expected: str) -> None:
    """Namespace is reused: the row's, else meta's, else DEFAULT_NAMESPACE."""
    meta = {"namespace": meta_ns} if meta_ns else {}
    row = Row(id=1, namespace=row_ns, content_url="s3://o/k.mp4", meta=meta)
    assert build_payload(row, enrichment(), LINKS, "pmoves-default")["namespace"] == expected


def test_payload_omits_absent_optionals() -> None:
    """No thumbnail and no ticks: the keys are absent, never null (the contract has no nulls)."""
    item = JellyfinItem(id="d" * 32, name="x")
    payload = build_payload(Row(id=1, content_url="s3://o/k.mp4"), enrichment(item, None), LINKS, "pmoves")
    assert "thumbnail_url" not in payload
    assert "duration" not in payload
    assert None not in payload.values()


def test_correlation_id_is_deterministic_per_row_and_version() -> None:
    """Same row and version give the same id on every replica; another version gives another."""
    assert correlation_id(5, "2025-10-14") == correlation_id(5, "2025-10-14")
    assert correlation_id(5, "2025-10-14") != correlation_id(6, "2025-10-14")
    assert correlation_id(5, "2025-10-14") != correlation_id(5, "2026-01-01")


def test_meta_patch_sets_markers_and_only_defaults_publish_event_sent_at() -> None:
    """Audit markers overwrite; publish_event_sent_at goes into defaults so an existing value survives."""
    patch = build_meta_patch(
        enrichment(), LINKS, version="v1", run_id="r1", event_id="e1", sent_at="2026-01-01T00:00:00Z"
    )
    assert patch.patch["backfill_version"] == "v1"
    assert patch.patch["backfill_event_id"] == "e1"
    assert patch.patch["backfill_run_id"] == "r1"
    assert patch.patch["jellyfin_item_id"] == "a" * 32
    assert "publish_event_sent_at" not in patch.patch
    assert patch.defaults == {"publish_event_sent_at": "2026-01-01T00:00:00Z"}
    assert patch.patch["backfill_published_at"] == "2026-01-01T00:00:00Z"  # always: the event's own time


@pytest.mark.parametrize(
    ("item", "thumb", "lacks"),
    [
        (ITEM, "https://t/x.png", []),
        (JellyfinItem(id="b" * 32, image_tags={"Primary": "t"}), "https://t/x.png", ["duration"]),
        (JellyfinItem(id="b" * 32, run_time_ticks=10), None, ["thumbnail"]),
        (JellyfinItem(id="b" * 32), None, ["duration", "thumbnail"]),
        (JellyfinItem(id="b" * 32, run_time_ticks=10), "https://media/outputs/x.jpg", []),  # storage's
    ],
)
def test_meta_patch_records_what_the_item_itself_lacks(
    item: JellyfinItem, thumb: str | None, lacks: list[str]
) -> None:
    """No runtime: no duration; no Primary image and nothing in storage: no thumbnail. Written on every
    backfilled row (an empty list says the item lacked nothing), so verify tells the item from a miss."""
    patch = build_meta_patch(
        enrichment(item, thumb), LINKS, version="v", run_id="r", event_id=None, sent_at=None
    )
    assert patch.patch["backfill_item_lacks"] == lacks


def test_metadata_only_patch_has_no_event_markers() -> None:
    """metadata-only sends no event, so neither an event id nor a send time is recorded."""
    patch = build_meta_patch(enrichment(), LINKS, version="v1", run_id="r1", event_id=None, sent_at=None)
    assert "backfill_event_id" not in patch.patch
    assert "backfill_published_at" not in patch.patch
    assert patch.defaults == {}
