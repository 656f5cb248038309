"""The publisher-discord double builds embeds the way PMOVES' publisher does (docs/upstreams.md §1)."""

from __future__ import annotations

import asyncio
import json

import nats
from aiohttp import web

from backfill_doubles.publisher_discord import PublisherDiscord, build_embed, hms
from backfill_doubles.serve import serve


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


async def test_close_lets_the_post_on_the_wire_be_answered_so_the_counts_agree(nats_url: str) -> None:
    """The demo reads `posted` and what the webhook received right after `close()`: an embed that
    reached the webhook must be counted as posted, not also as "not posted" (a race the CI showed)."""
    received: list[object] = []
    arrived, answer = asyncio.Event(), asyncio.Event()

    async def slow_webhook(request: web.Request) -> web.Response:
        received.append(await request.json())
        arrived.set()
        await answer.wait()  # the answer is still on its way when close() is called
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", slow_webhook)
    async with serve(app) as url:
        publisher = PublisherDiscord(f"{url}/hook")
        await publisher.start(nats_url)
        nc = await nats.connect(nats_url)
        await nc.publish("content.published.v1", json.dumps({"payload": {"title": "t"}}).encode())
        await nc.flush()
        await nc.close()
        await asyncio.wait_for(arrived.wait(), 10)  # the webhook holds the embed, not answered yet
        closing = asyncio.ensure_future(publisher.close())
        await asyncio.sleep(0)  # one turn of the loop, no time: close() runs up to where it waits
        assert not closing.done()
        answer.set()
        await asyncio.wait_for(closing, 10)
    assert (publisher.received, publisher.posted, len(received)) == (1, 1, 1)
