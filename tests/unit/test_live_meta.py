"""The keys PMOVES' live publisher puts into the event meta, on backfilled events and rows alike."""

from __future__ import annotations

import msgspec
import pytest

from backfill.core.model import JellyfinItem, Row
from backfill.core.payload import Enrichment, LinkConfig, build_meta_patch, build_payload, live_meta

LINKS = LinkConfig(public_base="https://watch.example.org")
ROW = Row(id=1, title="t", content_url="s3://outputs/a.mp4", meta={"keep": True})


def item(**fields: object) -> JellyfinItem:
    wire = {"Id": "a" * 32, "Name": "t", "Type": "Movie", "RunTimeTicks": 10_000_000, **fields}
    return msgspec.json.decode(msgspec.json.encode(wire), type=JellyfinItem)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"UserData": {"Played": True, "PlayCount": 2}}, {"jellyfin_played": True}),
        ({"UserData": {"Played": False}}, {}),
        ({}, {}),  # no UserData at all
    ],
)
def test_jellyfin_played_only_when_the_configured_user_played_it(
    fields: dict[str, object], expected: dict[str, object]
) -> None:
    """Type and the public base always; `jellyfin_played` only when `UserData.Played` is true."""
    keys = live_meta(Enrichment(item(**fields), "jellyfin_id", None, None), LINKS)
    assert keys == {
        "jellyfin_item_type": "Movie",
        "jellyfin_base_url": "https://watch.example.org",
        **expected,
    }


def test_live_keys_are_top_level_keys_of_payload_meta_and_of_the_row_patch_only() -> None:
    """In `payload.meta` and the meta patch, beside the Jellyfin fields; not on the payload's top level."""
    enrichment = Enrichment(item(Type="Episode", UserData={"Played": True}), "jellyfin_search", None, None)
    payload = build_payload(ROW, enrichment, LINKS, "pmoves")
    patch = build_meta_patch(enrichment, LINKS, version="v", run_id="r", event_id="e", sent_at=None).patch
    expected = {
        "jellyfin_item_type": "Episode",
        "jellyfin_base_url": "https://watch.example.org",
        "jellyfin_played": True,
    }
    for meta in (payload["meta"], patch):
        assert {k: meta[k] for k in expected} == expected
        assert meta["jellyfin_item_id"] == "a" * 32 and meta["duration"] == 1.0
    assert not set(expected) & set(payload)
    assert payload["meta"]["keep"] is True


def test_an_item_without_a_type_gets_no_type_key() -> None:
    """Jellyfin always sends Type; if an answer lacks it, the key is left out rather than null."""
    keys = live_meta(Enrichment(JellyfinItem(id="b" * 32), "jellyfin_id", None, None), LINKS)
    assert keys == {"jellyfin_base_url": "https://watch.example.org"}
