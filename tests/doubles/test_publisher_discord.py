"""The publisher-discord double builds embeds the way PMOVES' publisher does (docs/upstreams.md §1)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import nats
from aiohttp import web

from backfill_doubles.publisher_discord import PublisherDiscord, build_embed, hms
from backfill_doubles.serve import serve


def fields_of(embed: dict[str, Any]) -> dict[str, str]:
    return {field["name"]: field["value"] for field in embed["fields"]}


def test_embed_links_public_url_first_then_jellyfin() -> None:
    """Link = public_url, else jellyfin_public_url (also as the "Public URL" field and the description's
    link); thumbnail from thumbnail_url, else meta's."""
    both = build_embed({"title": "t", "public_url": "https://cdn/x", "jellyfin_public_url": "https://jf/x"})
    assert both["url"] == "https://cdn/x"
    assert both["description"] == "[Open published content](https://cdn/x)"
    only_jf = build_embed(
        {"title": "t", "jellyfin_public_url": "https://jf/x", "meta": {"thumbnail_url": "m"}}
    )
    assert only_jf["url"] == "https://jf/x"
    assert fields_of(only_jf)["Public URL"] == "https://jf/x"
    assert only_jf["thumbnail"] == {"url": "m"}
    assert fields_of(build_embed({"title": "t"}))["Public URL"] == "_not available_"


def test_embed_title_color_and_the_fields_of_a_published_event() -> None:
    """As publisher-discord's `_format_event` renders content.published.v1: "Published: " + title, its
    green, Namespace, Published Path and Artifact URI fields."""
    embed = build_embed(
        {
            "title": "Night Drive",
            "namespace": "pmoves",
            "published_path": "a/b.mp4",
            "artifact_uri": "s3://outputs/a/b.mp4",
        }
    )
    assert (embed["title"], embed["color"]) == ("Published: Night Drive", 0x22C55E)
    fields = fields_of(embed)
    assert (fields["Namespace"], fields["Published Path"], fields["Artifact URI"]) == (
        "pmoves",
        "`a/b.mp4`",
        "s3://outputs/a/b.mp4",
    )
    assert build_embed({"published_path": "a/b.mp4"})["title"] == "Published: a/b.mp4"


def test_embed_fields_duration_jellyfin_and_at_most_twelve_tags() -> None:
    """Duration as H:MM:SS, "Jellyfin Item" (the id in backticks) and "Jellyfin" (the deep link) only
    with an item id, twelve tags at most, each in backticks."""
    embed = build_embed(
        {
            "title": "t",
            "duration": 3725.4,
            "jellyfin_item_id": "a" * 32,
            "jellyfin_public_url": "https://jf/web/#/details?id=a",
            "tags": [f"t{i}" for i in range(20)],
        }
    )
    fields = fields_of(embed)
    assert fields["Duration"] == "1:02:05"
    assert fields["Jellyfin Item"] == f"`{'a' * 32}`"
    assert fields["Jellyfin"] == "https://jf/web/#/details?id=a"
    assert fields["Tags"].count(",") == 11 and fields["Tags"].startswith("`t0`, `t1`")
    assert "Jellyfin Item" not in fields_of(build_embed({"title": "t"}))
    assert hms(59.6) == "0:01:00"


def test_without_a_deep_link_the_jellyfin_field_is_built_in_the_old_form() -> None:
    """A live event with only an item id: the link publisher-discord builds from the base URL."""
    embed = build_embed({"title": "t", "jellyfin_item_id": "abc"}, jellyfin_url="http://jellyfin:8096")
    assert fields_of(embed)["Jellyfin"] == "http://jellyfin:8096/web/index.html#!/details?id=abc"
    assert "Jellyfin" not in fields_of(build_embed({"title": "t", "jellyfin_item_id": "abc"}))


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


class Records:
    """A recorder: what the double would upsert into the metrics table, as (event id, success)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, bool]] = []
        self.written = asyncio.Event()

    async def record(self, row: dict[str, Any]) -> None:
        self.rows.append((row["published_event_id"], row["webhook_success"]))
        self.written.set()

    async def aclose(self) -> None:
        return None


async def post_one_event(
    nats_url: str, answers: list[web.Response]
) -> tuple[PublisherDiscord, list[float], Records]:
    """One event through the double against a webhook giving `answers` in turn; when each POST came."""
    arrivals: list[float] = []
    done = asyncio.Event()

    async def webhook(_request: web.Request) -> web.Response:
        arrivals.append(asyncio.get_running_loop().time())
        answer = answers.pop(0)
        if not answers:
            done.set()
        return answer

    app = web.Application()
    app.router.add_post("/hook", webhook)
    records = Records()
    async with serve(app) as url:
        publisher = PublisherDiscord(f"{url}/hook", recorder=records, first_backoff=0.05)
        await publisher.start(nats_url)
        nc = await nats.connect(nats_url)
        envelope = {"id": "e-1", "topic": "content.published.v1", "payload": {"title": "t"}}
        await nc.publish("content.published.v1", json.dumps(envelope).encode())
        await nc.flush()
        await nc.close()
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.wait_for(records.written.wait(), 10)  # handled: lost (after its last wait) or not
        await asyncio.wait_for(publisher.close(), 10)
    return publisher, arrivals, records


def limited(after: str) -> web.Response:
    return web.json_response(
        {"message": "You are being rate limited.", "retry_after": 9, "global": False},
        status=429,
        headers={"Retry-After": after},
    )


async def test_rate_limited_three_times_the_embed_is_lost_after_waiting_each_retry_after_header(
    nats_url: str,
) -> None:
    """As `_post_discord(retries=3)`: three POSTs in all, each retry after the 429's Retry-After header
    (not the body's retry_after), then lost and recorded as a failure."""
    publisher, arrivals, records = await post_one_event(
        nats_url, [limited("0.3"), limited("0.3"), limited("0.3")]
    )
    assert len(arrivals) == 3
    assert all(later - earlier >= 0.3 for earlier, later in itertools.pairwise(arrivals))
    assert all(later - earlier < 5 for earlier, later in itertools.pairwise(arrivals)), (
        "the header, not the body"
    )
    assert (publisher.posted, publisher.dropped) == (0, 1)
    assert records.rows == [("e-1", False)]


async def test_a_5xx_is_retried_after_the_backoff_and_a_later_204_delivers(nats_url: str) -> None:
    publisher, arrivals, records = await post_one_event(
        nats_url, [web.Response(status=502), web.Response(status=204)]
    )
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 0.05
    assert (publisher.posted, publisher.dropped) == (1, 0)
    assert records.rows == [("e-1", True)]


async def test_any_other_refusal_is_not_retried(nats_url: str) -> None:
    """A 400 (an embed Discord will not take) is one POST and a recorded failure."""
    publisher, arrivals, records = await post_one_event(
        nats_url, [web.json_response({"code": 50035}, status=400)]
    )
    assert len(arrivals) == 1
    assert (publisher.posted, publisher.dropped) == (0, 0)
    assert records.rows == [("e-1", False)]
