"""A row's backfill embed in a Discord channel: what PMOVES' publisher-discord shows for a republished
`content.published.v1` event, read back from the channel, and which message is whose. Pure, no I/O.

publisher-discord renders one embed per event (docs/upstreams.md §1, "How an event is rendered"): the
link (`url`: `public_url`, else `jellyfin_public_url`), the fields "Artifact URI", "Duration" (H:MM:SS),
"Jellyfin Item" (the id in backticks), "Jellyfin" (the deep link), "Tags" (the first 12, each in
backticks), and the thumbnail. The envelope id appears nowhere in it, so a row's own backfill embed is
recognised by what only that event shows, all together:

- the row's artifact, its Jellyfin item id and the deep link the backfill stored (`EmbedKey`): another
  row's embed has another artifact or item, whatever its title; the row's original live embed had no
  Jellyfin fields, or a deep link built from the internal URL in the older form;
- the tag `backfill`, which every republished event carries (unless the row already had 12 tags, then
  publisher-discord cuts it off);
- a message from the webhook publisher-discord posts with (`webhook_id`), inside the run's window
  (message ids are snowflakes: their time is in them).

Titles are never compared: two rows may share one, and `DISCORD_PUBLISH_PREFIX` changes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backfill.core.model import Row
from backfill.core.payload import BACKFILL_TAG, artifact_uri, merge_tags

DISCORD_EPOCH_MS = 1_420_070_400_000  # 2015-01-01T00:00:00Z, the zero of Discord's snowflakes
EMBED_PARTS = ("link", "duration", "jellyfin", "thumbnail")
MAX_TAGS_SHOWN = 12  # publisher-discord shows the first 12 tags


def snowflake_at(when: datetime) -> int:
    """The smallest snowflake of that moment: every message posted at or after it has a larger id."""
    millis = int(when.timestamp() * 1000) - DISCORD_EPOCH_MS
    return max(millis, 0) << 22


def time_of(snowflake: int) -> datetime:
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, UTC)


@dataclass(frozen=True)
class ChannelMessage:
    """One message of the channel, as much of it as matching needs."""

    id: int
    webhook_id: str | None
    embeds: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class EmbedKey:
    """What identifies one row's backfill embed (see the module docstring)."""

    artifact_uri: str
    jellyfin_item_id: str
    jellyfin_link: str


@dataclass(frozen=True)
class SeenEmbed:
    """A row's embed found in the channel: which message, when, and which parts it shows."""

    message_id: int
    parts: dict[str, bool]

    @property
    def at(self) -> datetime:
        return time_of(self.message_id)


def _fields(embed: Mapping[str, Any]) -> dict[str, str]:
    """Field name -> value (the first of each name), for the fields that are well formed."""
    found: dict[str, str] = {}
    fields = embed.get("fields")
    for field in fields if isinstance(fields, list) else []:
        if (
            isinstance(field, dict)
            and isinstance(field.get("name"), str)
            and isinstance(field.get("value"), str)
        ):
            found.setdefault(field["name"], field["value"])
    return found


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def embed_parts(embed: Mapping[str, Any]) -> dict[str, bool]:
    """Which parts a rendered embed shows: the link, the Duration field, the Jellyfin field, the thumbnail."""
    fields = _fields(embed)
    thumbnail = embed.get("thumbnail")
    return {
        "link": _text(embed.get("url")),
        "duration": _text(fields.get("Duration")),
        "jellyfin": _text(fields.get("Jellyfin")),
        "thumbnail": isinstance(thumbnail, dict) and _text(thumbnail.get("url")),
    }


def embed_key(embed: Mapping[str, Any]) -> EmbedKey | None:
    """The key an embed shows; None when it lacks any part of it (not a backfill embed)."""
    fields = _fields(embed)
    artifact = fields.get("Artifact URI", "").strip()
    item = fields.get("Jellyfin Item", "").strip().strip("`").strip()
    link = fields.get("Jellyfin", "").strip()
    if not (artifact and item and link):
        return None
    return EmbedKey(artifact, item, link)


def shows_backfill_tag(embed: Mapping[str, Any]) -> bool:
    tags = _fields(embed).get("Tags", "")
    return f"`{BACKFILL_TAG}`" in [part.strip() for part in tags.split(",")]


def row_key(row: Row) -> EmbedKey | None:
    """The key of the embed publisher-discord renders for this row's backfilled event (its meta holds
    the values the event carried); None when the row was not backfilled with them."""
    meta = row.meta_dict
    artifact = artifact_uri(row)
    item, link = meta.get("jellyfin_item_id"), meta.get("jellyfin_public_url")
    if not (artifact and _text(item) and _text(link)):
        return None
    return EmbedKey(artifact.strip(), str(item).strip(), str(link).strip())


def backfill_tag_shown(row: Row) -> bool:
    """Whether the row's event showed the `backfill` tag: it follows the row's own tags, and
    publisher-discord shows only the first 12."""
    tags = merge_tags(row.meta_dict.get("tags"))
    return tags.index(BACKFILL_TAG) < MAX_TAGS_SHOWN


def _from_webhook(message: ChannelMessage, webhook_id: str | None) -> bool:
    if message.webhook_id is None:
        return False
    return webhook_id is None or message.webhook_id == webhook_id


def match_embeds(
    rows: Sequence[Row], messages: Iterable[ChannelMessage], *, webhook_id: str | None, after: int
) -> dict[int, list[SeenEmbed]]:
    """Per row id (rows with a key only), the embeds of `messages` that are its backfill embed, oldest
    first: posted by the webhook (`webhook_id`; any webhook when None) after snowflake `after`."""
    by_key: dict[EmbedKey, list[Row]] = {}
    for row in rows:
        if (key := row_key(row)) is not None:
            by_key.setdefault(key, []).append(row)
    seen: dict[int, list[SeenEmbed]] = {row.id: [] for group in by_key.values() for row in group}
    for message in sorted(messages, key=lambda m: m.id):
        if message.id <= after or not _from_webhook(message, webhook_id):
            continue
        for embed in message.embeds:
            key = embed_key(embed)
            for row in by_key.get(key, []) if key is not None else []:
                if shows_backfill_tag(embed) or not backfill_tag_shown(row):
                    seen[row.id].append(SeenEmbed(message.id, embed_parts(embed)))
    return seen


def same_embed_groups(rows: Sequence[Row]) -> dict[int, tuple[int, ...]]:
    """Per row id, the other selected rows whose backfill embed looks exactly like its own (same key):
    Discord cannot tell their embeds apart."""
    by_key: dict[EmbedKey, list[int]] = {}
    for row in rows:
        if (key := row_key(row)) is not None:
            by_key.setdefault(key, []).append(row.id)
    return {rid: tuple(o for o in ids if o != rid) for ids in by_key.values() if len(ids) > 1 for rid in ids}
