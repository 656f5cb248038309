"""The Discord double's read side serves a channel's history as Discord's REST API does to a bot:
auth, permissions, `limit`, snowflake paging, rate-limit headers and 429s (docs/upstreams.md §4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from backfill_doubles.discord import DiscordSink, SlidingWindow
from backfill_doubles.discord_history import snowflake
from backfill_doubles.serve import serve

BOT = {"Authorization": "Bot bot-token"}
CHANNEL = "900"
EMBED = {"embeds": [{"title": "Published: t", "fields": [{"name": "Duration", "value": "0:00:12"}]}]}
T0 = 1_796_000_000.0  # a wall-clock time in 2026


class Clocks:
    """Monotonic and wall clocks the test moves by hand."""

    def __init__(self) -> None:
        self.mono, self.wall = 1000.0, T0

    def tick(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def sink(clocks: Clocks) -> DiscordSink:
    sink = DiscordSink(clock=lambda: clocks.mono, wall_clock=lambda: clocks.wall)
    sink.history.add_webhook("111", "hook-token", CHANNEL)
    sink.history.add_bot("bot-token", CHANNEL)
    return sink


@pytest.fixture
async def http(sink: DiscordSink) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(sink.app()) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def post_some(http: httpx.AsyncClient, clocks: Clocks, n: int) -> None:
    for i in range(n):
        body = {"embeds": [{**EMBED["embeds"][0], "title": f"Published: {i}"}]}
        assert (await http.post("/api/webhooks/111/hook-token", json=body)).status_code == 204
        clocks.tick(2.1)  # within the webhook's 5 per 2 s


async def read(http: httpx.AsyncClient, **params: Any) -> httpx.Response:
    return await http.get(f"/api/v10/channels/{CHANNEL}/messages", params=params, headers=BOT)


async def test_the_webhook_names_its_channel_with_no_other_credential(http: httpx.AsyncClient) -> None:
    found = await http.get("/api/webhooks/111/hook-token")
    assert found.status_code == 200
    assert (found.json()["channel_id"], found.json()["type"]) == (CHANNEL, 1)
    wrong = await http.get("/api/v10/webhooks/111/nope")
    assert (wrong.status_code, wrong.json()["code"]) == (401, 50027)
    unknown = await http.get("/api/webhooks/222/hook-token")
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Unknown Webhook", "code": 10015})


async def test_messages_are_newest_first_with_webhook_id_and_embeds(
    http: httpx.AsyncClient, clocks: Clocks
) -> None:
    await post_some(http, clocks, 3)
    page = (await read(http)).json()
    assert [m["embeds"][0]["title"] for m in page] == ["Published: 2", "Published: 1", "Published: 0"]
    assert all(m["webhook_id"] == "111" and m["author"]["bot"] for m in page)
    assert page[0]["embeds"][0]["type"] == "rich"
    ids = [int(m["id"]) for m in page]
    assert ids == sorted(ids, reverse=True) and ids[-1] >= snowflake(T0)


async def test_before_and_after_page_by_snowflake(http: httpx.AsyncClient, clocks: Clocks) -> None:
    """`before`: the newest older than it; `after`: the `limit` right after it, still newest first."""
    await post_some(http, clocks, 5)
    ids = [int(m["id"]) for m in (await read(http)).json()]  # newest first
    older = (await read(http, before=ids[1], limit=2)).json()
    assert [int(m["id"]) for m in older] == ids[2:4]
    newer = (await read(http, after=ids[4], limit=2)).json()
    assert [int(m["id"]) for m in newer] == [ids[2], ids[3]]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"before": "abc"}])
async def test_limit_is_1_to_100_and_ids_are_snowflakes(
    http: httpx.AsyncClient, params: dict[str, str]
) -> None:
    bad = await read(http, **params)
    assert (bad.status_code, bad.json()["code"], bad.json()["message"]) == (400, 50035, "Invalid Form Body")


async def test_the_default_page_is_50(http: httpx.AsyncClient, sink: DiscordSink) -> None:
    for i in range(60):
        sink.history.add_message(CHANNEL, {"content": str(i)}, at=T0 - 1000 + i)
    assert len((await read(http)).json()) == 50
    assert len((await read(http, limit=100)).json()) == 60


@pytest.mark.parametrize(
    ("headers", "channel", "status", "body"),
    [
        ({}, CHANNEL, 401, {"message": "401: Unauthorized", "code": 0}),
        ({"Authorization": "bot-token"}, CHANNEL, 401, {"message": "401: Unauthorized", "code": 0}),
        ({"Authorization": "Bot other"}, CHANNEL, 401, {"message": "401: Unauthorized", "code": 0}),
        (BOT, "12345", 404, {"message": "Unknown Channel", "code": 10003}),
        (BOT, "901", 403, {"message": "Missing Access", "code": 50001}),
    ],
)
async def test_auth_and_access_are_checked_like_discord(
    http: httpx.AsyncClient, sink: DiscordSink, headers: dict[str, str], channel: str, status: int, body: Any
) -> None:
    """No `Bot` token or an unknown one: 401 code 0; no channel: 404 10003; a channel the bot cannot
    view: 403 50001."""
    sink.history.channels["901"] = []
    answer = await http.get(f"/api/channels/{channel}/messages", headers=headers)
    assert (answer.status_code, answer.json()) == (status, body)


async def test_without_read_message_history_the_channel_looks_empty(
    http: httpx.AsyncClient, sink: DiscordSink, clocks: Clocks
) -> None:
    """Discord's trap: View Channel alone answers 200 with no messages."""
    await post_some(http, clocks, 2)
    sink.history.add_bot("bot-token", CHANNEL, ("VIEW_CHANNEL",))
    answer = await read(http)
    assert (answer.status_code, answer.json()) == (200, [])


async def test_the_bucket_says_what_is_left_and_429s_when_empty(
    http: httpx.AsyncClient, sink: DiscordSink, clocks: Clocks
) -> None:
    """X-RateLimit-* on every answer; past the bucket 429 with retry_after, global false and
    Retry-After; once the bucket resets, reads pass again."""
    sink.history.bucket_limit, sink.history.bucket_seconds = 2, 5.0
    first = await read(http)
    assert first.headers["X-RateLimit-Limit"] == "2" and first.headers["X-RateLimit-Remaining"] == "1"
    assert float(first.headers["X-RateLimit-Reset-After"]) == pytest.approx(5.0)
    assert first.headers["X-RateLimit-Bucket"]
    clocks.tick(1.0)
    assert (await read(http)).headers["X-RateLimit-Remaining"] == "0"
    limited = await read(http)
    assert limited.status_code == 429
    assert limited.json()["global"] is False and limited.json()["retry_after"] == pytest.approx(4.0)
    assert limited.headers["Retry-After"] == "4" and limited.headers["X-RateLimit-Scope"] == "user"
    clocks.tick(4.0)
    assert (await read(http)).status_code == 200
    assert sink.history.limited == 1


async def test_the_global_limit_and_forced_429s(http: httpx.AsyncClient, sink: DiscordSink) -> None:
    sink.history.global_limit, sink.history.bucket_limit = 1, 100
    assert (await read(http)).status_code == 200
    limited = await read(http)
    assert (limited.status_code, limited.json()["global"], limited.headers["X-RateLimit-Global"]) == (
        429,
        True,
        "true",
    )
    sink.history.global_limit, sink.history.force_429 = 100, 1
    forced = await http.get(f"/api/channels/{CHANNEL}/messages", headers=BOT)
    assert (forced.status_code, forced.json()["global"]) == (429, False)


async def test_refused_reads_count_toward_the_ban(http: httpx.AsyncClient, sink: DiscordSink) -> None:
    """401, 403 and 429 answers to reads count with the webhooks' 429s: enough of them ban the IP."""
    sink.ban_window = SlidingWindow(3, 600.0)
    for _ in range(3):
        await http.get(f"/api/channels/{CHANNEL}/messages")
    assert sink.banned
    banned = await http.post("/api/webhooks/111/hook-token", json=EMBED)
    assert (banned.status_code, banned.text) == (429, "error code: 1015")
