"""The publisher-discord double builds embeds the way PMOVES' publisher does (FACTS §1)."""

from __future__ import annotations

from backfill_doubles.publisher_discord import build_embed, hms


def test_embed_links_public_url_first_then_jellyfin() -> None:
    """Link = public_url, else jellyfin_public_url; thumbnail from thumbnail_url, else meta's."""
    both = build_embed({"title": "t", "public_url": "https://cdn/x", "jellyfin_public_url": "https://jf/x"})
    assert both["url"] == "https://cdn/x"
    only_jf = build_embed(
        {"title": "t", "jellyfin_public_url": "https://jf/x", "meta": {"thumbnail_url": "m"}}
    )
    assert only_jf["url"] == "https://jf/x"
    assert only_jf["thumbnail"] == {"url": "m"}


def test_embed_fields_duration_jellyfin_and_at_most_twelve_tags() -> None:
    """Duration as H:MM:SS, a Jellyfin field only with an item id, twelve tags at most."""
    embed = build_embed(
        {"title": "t", "duration": 3725.4, "jellyfin_item_id": "a" * 32, "tags": [f"t{i}" for i in range(20)]}
    )
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Duration"] == "1:02:05"
    assert fields["Jellyfin"] == "a" * 32
    assert fields["Tags"].count(",") == 11
    assert "Jellyfin" not in {f["name"] for f in build_embed({"title": "t"})["fields"]}
    assert hms(59.6) == "0:01:00"
