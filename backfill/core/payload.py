"""Building the `content.published.v1` payload and the row's meta patch: pure functions, no I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from backfill.core import related as youtube
from backfill.core.model import JellyfinItem, Row

BACKFILL_TAG = "backfill"
# What the worker records besides the Jellyfin fields, for `producer verify` (docs/upstreams.md §1):
ITEM_LACKS_KEY = "backfill_item_lacks"  # the embed parts the Jellyfin item itself could not give
PUBLISHED_AT_KEY = "backfill_published_at"  # when Agent Zero accepted the row's event
TICKS_PER_SECOND = 10_000_000
# Fixed namespace so the correlation id of (row, version) is the same on every worker and every retry.
_CORRELATION_NS = uuid.UUID("5b0e7f52-9c1e-4a53-8f0a-6a4f5f1e2d10")


@dataclass(frozen=True)
class LinkConfig:
    """How public URLs are formed: Discord and browsers must reach them, so never the internal URL."""

    public_base: str
    deep_link_format: str = "{base}/web/#/details?id={id}&serverId={server_id}"
    server_id: str | None = None
    image_max_width: int = 640


class ResolvedBy(StrEnum):
    """How the row's Jellyfin item was found (shown by `producer preview`)."""

    JELLYFIN_ID = "jellyfin_id"  # the row's own `meta.jellyfin_item_id`
    JELLYFIN_SEARCH = "jellyfin_search"  # a confident title search


class ThumbnailSource(StrEnum):
    """Where the thumbnail URL came from (shown by `producer preview`)."""

    JELLYFIN = "jellyfin"  # the item's primary image
    STORAGE = "storage"  # a thumbnail next to the artifact in object storage


@dataclass(frozen=True)
class Enrichment:
    """What the read-only enrichment found for one row."""

    item: JellyfinItem
    resolved_by: ResolvedBy
    thumbnail_url: str | None
    thumbnail_source: ThumbnailSource | None  # None: no thumbnail
    related: youtube.Related | None = None  # None: the request did not ask for YouTube links


def duration_seconds(ticks: int | None) -> float | None:
    if ticks is None or ticks < 0:
        return None
    return round(ticks / TICKS_PER_SECOND, 3)


def jellyfin_public_url(item: JellyfinItem, links: LinkConfig) -> str:
    server_id = item.server_id or links.server_id or ""
    template = links.deep_link_format
    if not server_id:
        template = template.replace("&serverId={server_id}", "").replace("?serverId={server_id}&", "?")
    return template.format(base=links.public_base, id=item.id, server_id=quote(server_id, safe=""))


def primary_image_url(item: JellyfinItem, links: LinkConfig) -> str | None:
    tag = item.primary_image_tag
    if not tag:
        return None
    return (
        f"{links.public_base}/Items/{item.id}/Images/Primary"
        f"?tag={quote(tag, safe='')}&maxWidth={links.image_max_width}"
    )


def merge_tags(existing: Any, extra: str = BACKFILL_TAG) -> list[str]:
    """Existing string tags in order, plus `extra`, without duplicates; non-list values are dropped."""
    tags: list[str] = []
    source = existing if isinstance(existing, list) else [existing] if isinstance(existing, str) else []
    for tag in [*source, extra]:
        if isinstance(tag, str) and tag.strip() and tag not in tags:
            tags.append(tag)
    return tags


def artifact_uri(row: Row) -> str | None:
    value = row.meta_dict.get("artifact_uri") or row.content_url
    return value if isinstance(value, str) and value else None


def published_path(row: Row, artifact: str | None) -> str | None:
    value = row.meta_dict.get("published_path")
    if isinstance(value, str) and value:
        return value
    if artifact and artifact.startswith("s3://"):
        _, _, key = artifact[len("s3://") :].partition("/")
        return key or None
    return None


def _optional_str(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and value else None


def jellyfin_fields(enrichment: Enrichment, links: LinkConfig) -> dict[str, Any]:
    """The four fields historic events lack, as stored in meta and sent in the payload."""
    fields: dict[str, Any] = {
        "jellyfin_item_id": enrichment.item.id,
        "jellyfin_public_url": jellyfin_public_url(enrichment.item, links),
    }
    if enrichment.thumbnail_url:
        fields["thumbnail_url"] = enrichment.thumbnail_url
    duration = duration_seconds(enrichment.item.run_time_ticks)
    if duration is not None:
        fields["duration"] = duration
    return fields


def item_lacks(enrichment: Enrichment) -> list[str]:
    """The embed parts the item could not give: `duration` when Jellyfin has no runtime for it,
    `thumbnail` when it has no Primary image and storage had no image beside the artifact. Recorded
    so a missing part reads as the item's, not as a miss of the backfill."""
    lacks = []
    if duration_seconds(enrichment.item.run_time_ticks) is None:
        lacks.append("duration")
    if not enrichment.thumbnail_url:
        lacks.append("thumbnail")
    return lacks


def live_meta(enrichment: Enrichment, links: LinkConfig) -> dict[str, Any]:
    """The keys PMOVES' live publisher puts into the event meta besides the four above
    (docs/upstreams.md §8): the item's type, the public base, and `jellyfin_played` only when the
    configured user has played it."""
    fields: dict[str, Any] = {"jellyfin_base_url": links.public_base}
    if enrichment.item.type:
        fields["jellyfin_item_type"] = enrichment.item.type
    if enrichment.item.played:
        fields["jellyfin_played"] = True
    return fields


def build_payload(
    row: Row, enrichment: Enrichment, links: LinkConfig, default_namespace: str
) -> dict[str, Any]:
    """The `content.published.v1` payload the upstream publisher would have sent, plus Jellyfin fields
    (on top and in meta), the live publisher's meta keys and, when linked, the related YouTube videos."""
    meta = row.meta_dict
    artifact = artifact_uri(row)
    fields = jellyfin_fields(enrichment, links)
    tags = merge_tags(meta.get("tags"))
    if (tag := youtube.payload_tag(enrichment.related)) is not None:
        tags = merge_tags(tags, tag)
    payload: dict[str, Any] = {
        "artifact_uri": artifact,
        "published_path": published_path(row, artifact),
        "namespace": row.namespace or _optional_str(meta, "namespace") or default_namespace,
        "tags": tags,
        **fields,
        "meta": {
            **meta,
            **fields,
            **live_meta(enrichment, links),
            **youtube.payload_meta(enrichment.related),
        },
    }
    title = row.title or _optional_str(meta, "title")
    optional = {"title": title, **{k: _optional_str(meta, k) for k in ("description", "public_url")}}
    payload.update({k: v for k, v in optional.items() if v is not None})
    return {k: v for k, v in payload.items() if v is not None}


def correlation_id(row_id: int, version: str) -> str:
    """Deterministic per (row, backfill version): every retry and replica sends the same one."""
    return str(uuid.uuid5(_CORRELATION_NS, f"studio_board:{row_id}:{version}"))


@dataclass(frozen=True)
class MetaPatch:
    """`patch` overwrites its keys; `defaults` fill only keys the row does not have yet."""

    patch: dict[str, Any]
    defaults: dict[str, Any]


def build_meta_patch(
    enrichment: Enrichment,
    links: LinkConfig,
    *,
    version: str,
    run_id: str,
    event_id: str | None,
    sent_at: str | None,
    current_meta: Mapping[str, Any] | None = None,
) -> MetaPatch:
    """The Jellyfin fields, the live publisher's keys, what YouTube linking stores (`current_meta`: the
    row's meta as read, to clear a gap an earlier run left) and the audit markers: what the item lacks,
    and for a republished row its event id and when the event went out (`sent_at`).
    `publish_event_sent_at` is only ever filled in, never overwritten."""
    patch = {
        **jellyfin_fields(enrichment, links),
        **live_meta(enrichment, links),
        **youtube.meta_patch(enrichment.related, current_meta or {}),
        ITEM_LACKS_KEY: item_lacks(enrichment),
        "backfill_version": version,
        "backfill_run_id": run_id,
    }
    if event_id is not None:
        patch["backfill_event_id"] = event_id
        if sent_at is not None:
            patch[PUBLISHED_AT_KEY] = sent_at
    defaults = {"publish_event_sent_at": sent_at} if sent_at is not None else {}
    return MetaPatch(patch=patch, defaults=defaults)
