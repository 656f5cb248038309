"""Finding a row's own backfill embed among a channel's messages: the key it shows, the window, the
webhook, the `backfill` tag; never the row's old live embed, never another row's lookalike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backfill.core.embeds import (
    ChannelMessage,
    EmbedKey,
    backfill_tag_shown,
    embed_key,
    embed_parts,
    match_embeds,
    row_key,
    same_embed_groups,
    shows_backfill_tag,
    snowflake_at,
    time_of,
)
from backfill.core.model import Row

WEBHOOK = "1300000000000000001"
RUN_START = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
AFTER = snowflake_at(RUN_START)
LINK = "https://watch.example.org/web/#/details?id={item}&serverId=s1"


def row(row_id: int, item: str = "a" * 32, artifact: str | None = None, tags: Any = None) -> Row:
    meta: dict[str, Any] = {
        "backfill_event_id": f"ev-{row_id}",
        "jellyfin_item_id": item,
        "jellyfin_public_url": LINK.format(item=item),
        "duration": 123.0,
        "thumbnail_url": f"https://watch.example.org/Items/{item}/Images/Primary?tag=t",
    }
    if tags is not None:
        meta["tags"] = tags
    content = artifact or f"s3://outputs/studio/{row_id:04d}/clip.mp4"
    return Row(id=row_id, title="Night Drive", content_url=content, status="published", meta=meta)


def rendered(
    source: Row, *, tags: str = "`studio`, `backfill`", jellyfin: bool = True, **parts: Any
) -> dict[str, Any]:
    """The embed PMOVES' publisher-discord posts for the row's backfilled event (its field names)."""
    meta = source.meta_dict
    fields = [
        {"name": "Public URL", "value": meta["jellyfin_public_url"], "inline": False},
        {"name": "Namespace", "value": "pmoves", "inline": True},
        {"name": "Artifact URI", "value": source.content_url, "inline": False},
        {"name": "Duration", "value": "0:02:03", "inline": True},
    ]
    if jellyfin:
        fields.append({"name": "Jellyfin Item", "value": f"`{meta['jellyfin_item_id']}`", "inline": True})
        fields.append({"name": "Jellyfin", "value": meta["jellyfin_public_url"], "inline": False})
    fields.append({"name": "Tags", "value": tags, "inline": False})
    embed: dict[str, Any] = {
        "type": "rich",
        "title": f"Published: {source.title}",
        "url": meta["jellyfin_public_url"],
        "fields": fields,
        "thumbnail": {"url": meta["thumbnail_url"]},
    }
    for name in parts.pop("without", ()):
        if name in ("url", "thumbnail"):
            embed.pop(name)
        else:
            embed["fields"] = [f for f in embed["fields"] if f["name"] != name]
    return embed


def message(embed: dict[str, Any], at: datetime, webhook: str | None = WEBHOOK, n: int = 0) -> ChannelMessage:
    return ChannelMessage(snowflake_at(at) + n, webhook, (embed,))


def test_snowflakes_carry_their_time() -> None:
    """A message posted after a moment has a larger id than that moment's snowflake."""
    later = RUN_START + timedelta(milliseconds=1)
    assert snowflake_at(later) > snowflake_at(RUN_START)
    assert time_of(snowflake_at(RUN_START)) == RUN_START
    assert snowflake_at(datetime(2015, 1, 1, tzinfo=UTC)) == 0


def test_embed_parts_are_the_link_duration_jellyfin_field_and_thumbnail() -> None:
    full = rendered(row(1))
    assert embed_parts(full) == {"link": True, "duration": True, "jellyfin": True, "thumbnail": True}
    bare = rendered(row(1), without=("url", "thumbnail", "Duration"), jellyfin=False)
    assert embed_parts(bare) == {"link": False, "duration": False, "jellyfin": False, "thumbnail": False}


def test_the_key_is_artifact_item_and_deep_link_as_the_row_stored_them() -> None:
    source = row(7)
    assert embed_key(rendered(source)) == row_key(source)
    assert row_key(source) == EmbedKey(str(source.content_url), "a" * 32, LINK.format(item="a" * 32))
    assert embed_key(rendered(source, jellyfin=False)) is None  # a live embed: no Jellyfin fields


def test_a_row_without_the_jellyfin_fields_has_no_key() -> None:
    assert row_key(Row(id=1, content_url="s3://outputs/x.mp4", meta={"backfill_event_id": "e"})) is None


@pytest.mark.parametrize(
    ("tags", "shown"),
    [
        (None, True),
        ([f"t{i}" for i in range(11)], True),
        ([f"t{i}" for i in range(12)], False),
        ("a,b", True),
    ],
)
def test_the_backfill_tag_is_shown_unless_twelve_tags_come_first(tags: Any, shown: bool) -> None:
    """publisher-discord shows the first 12 tags; the backfill's comes after the row's own."""
    assert backfill_tag_shown(row(1, tags=tags)) is shown


def test_the_tag_field_is_read_as_publisher_discord_writes_it() -> None:
    assert shows_backfill_tag(rendered(row(1)))
    assert not shows_backfill_tag(rendered(row(1), tags="`studio`, `backfills`"))


def test_only_the_rows_own_backfill_embed_in_the_window_counts() -> None:
    """The row's old live embed, a live-looking embed in the window, another row's embed with the same
    title, another webhook's message and an embed without the backfill tag are all left out."""
    mine, other = row(1), row(2, item="b" * 32)
    inside = RUN_START + timedelta(minutes=5)
    messages = [
        message(rendered(mine), RUN_START - timedelta(days=90)),  # months ago: before the window
        message(rendered(mine, jellyfin=False), inside, n=1),  # live-style, no Jellyfin fields
        message(rendered(other), inside, n=2),  # same title, another artifact and item
        message(rendered(mine), inside, webhook="999", n=3),  # another webhook
        message(rendered(mine), inside, webhook=None, n=4),  # a user's message quoting it
        message(rendered(mine, tags="`studio`"), inside, n=5),  # no backfill tag
        message(rendered(mine), inside, n=6),  # the one
    ]
    seen = match_embeds([mine, other], messages, webhook_id=WEBHOOK, after=AFTER)
    assert [embed.message_id for embed in seen[1]] == [snowflake_at(inside) + 6]
    assert [embed.message_id for embed in seen[2]] == [snowflake_at(inside) + 2]
    assert seen[1][0].parts == {"link": True, "duration": True, "jellyfin": True, "thumbnail": True}


def test_a_posted_twice_embed_is_seen_twice_oldest_first() -> None:
    mine = row(1)
    first, second = RUN_START + timedelta(minutes=1), RUN_START + timedelta(minutes=2)
    messages = [message(rendered(mine), second), message(rendered(mine, without=("thumbnail",)), first)]
    seen = match_embeds([mine], messages, webhook_id=None, after=AFTER)
    assert [embed.at for embed in seen[1]] == [first, second]
    assert seen[1][0].parts["thumbnail"] is False


def test_without_the_tag_shown_a_row_with_twelve_tags_still_matches() -> None:
    crowded = row(1, tags=[f"t{i}" for i in range(12)])
    tags = ", ".join(f"`t{i}`" for i in range(12))
    seen = match_embeds(
        [crowded], [message(rendered(crowded, tags=tags), RUN_START)], webhook_id=None, after=0
    )
    assert len(seen[1]) == 1


def test_rows_with_the_same_artifact_and_item_are_lookalikes() -> None:
    """Two rows for one artifact and item render the same key: Discord cannot tell their embeds apart."""
    a, b, c = row(1, artifact="s3://outputs/x.mp4"), row(2, artifact="s3://outputs/x.mp4"), row(3)
    assert same_embed_groups([a, b, c]) == {1: (2,), 2: (1,)}
