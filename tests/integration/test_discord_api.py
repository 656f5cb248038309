"""The Discord adapter against the Discord double over loopback: it finds the webhook's channel, reads
only the window, keeps to Discord's rate limits (one request at a time per route, empty buckets and
429s waited out), stops at once on 401/403/404 saying what to fix, and never shows a token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from backfill.adapters.discord import MAX_LIMITED, DiscordApi, RouteLimits
from backfill.adapters.transport import HttpClient
from backfill.core.embeds import ChannelMessage, snowflake_at, time_of
from backfill.core.errors import NotFound, UpstreamRejected, UpstreamUnavailable
from backfill_doubles.discord import DiscordSink
from backfill_doubles.discord_history import snowflake
from backfill_doubles.serve import serve

BOT_TOKEN = "bot-secret-token-0123456789"
HOOK_TOKEN = "hook-secret-token-abcdef"
CHANNEL = "900"
T0 = time.time() - 3600  # history seeded from an hour ago


@pytest.fixture
def sink() -> DiscordSink:
    sink = DiscordSink()
    sink.history.add_webhook("111", HOOK_TOKEN, CHANNEL)
    sink.history.add_bot(BOT_TOKEN, CHANNEL)
    sink.history.channels["901"] = []  # a channel the bot cannot see
    for i in range(250):
        sink.history.add_message(CHANNEL, {"embeds": [{"title": f"m{i}"}]}, webhook_id="111", at=T0 + i)
    return sink


@pytest.fixture
async def api_url(sink: DiscordSink) -> AsyncIterator[str]:
    async with serve(sink.app()) as url:
        yield f"{url}/api"


def reader(http: HttpClient, api_url: str, token: str | None = BOT_TOKEN) -> DiscordApi:
    return DiscordApi(http, api_url, token)


async def read_all(api: DiscordApi, channel: str = CHANNEL, after: int = 0) -> list[list[ChannelMessage]]:
    return [page async for page in api.messages_since(channel, after)]


def assert_secret_free(error: BaseException) -> None:
    assert BOT_TOKEN not in str(error) and HOOK_TOKEN not in str(error)


async def test_the_webhook_names_its_channel(http: HttpClient, api_url: str) -> None:
    assert await reader(http, api_url).webhook_channel("111", HOOK_TOKEN) == CHANNEL


async def test_a_wrong_webhook_token_or_an_unknown_webhook_stops_at_once(
    http: HttpClient, api_url: str, sink: DiscordSink
) -> None:
    with pytest.raises(UpstreamRejected) as wrong:
        await reader(http, api_url).webhook_channel("111", "not-" + HOOK_TOKEN)
    assert "401" in str(wrong.value) and "DISCORD_WEBHOOK_URL" in str(wrong.value)
    with pytest.raises(NotFound) as unknown:
        await reader(http, api_url).webhook_channel("222", HOOK_TOKEN)
    assert "10015" in str(unknown.value) and "DISCORD_WEBHOOK_URL" in str(unknown.value)
    assert_secret_free(wrong.value)
    assert_secret_free(unknown.value)


async def test_pages_go_back_newest_first_and_stop_at_the_window(
    http: HttpClient, api_url: str, sink: DiscordSink
) -> None:
    """250 messages, the window holds the newest 150: two pages (100 and 50), no page beyond."""
    after = int(sink.history.channels[CHANNEL][99]["id"])
    pages = await read_all(reader(http, api_url), after=after)
    assert [len(page) for page in pages] == [100, 50]
    ids = [message.id for page in pages for message in page]
    assert ids == sorted(ids, reverse=True) and min(ids) > after
    assert pages[0][0].webhook_id == "111" and pages[0][0].embeds[0]["title"] == "m249"
    assert sink.history.reads == 2


async def test_the_whole_channel_is_read_when_the_window_holds_it(http: HttpClient, api_url: str) -> None:
    pages = await read_all(reader(http, api_url))
    assert [len(page) for page in pages] == [100, 100, 50]


@pytest.mark.parametrize(
    ("token", "channel", "error", "says"),
    [
        ("not-the-bot", CHANNEL, UpstreamRejected, ["401", "DISCORD_BOT_TOKEN"]),
        (
            BOT_TOKEN,
            "901",
            UpstreamRejected,
            ["403", "Missing Access", "View Channel", "Read Message History"],
        ),
        (BOT_TOKEN, "12345", NotFound, ["404", "Unknown Channel", "10003", "DISCORD_CHANNEL_ID"]),
    ],
)
async def test_401_403_404_stop_after_one_request_saying_what_to_fix(
    http: HttpClient,
    api_url: str,
    sink: DiscordSink,
    token: str,
    channel: str,
    error: type[Exception],
    says: list[str],
) -> None:
    with pytest.raises(error) as stopped:
        await read_all(reader(http, api_url, token), channel)
    assert all(part in str(stopped.value) for part in says), str(stopped.value)
    assert_secret_free(stopped.value)
    assert sum(sink.history.statuses.values()) == 1  # one answer, never retried


async def test_no_bot_token_is_a_clear_refusal_without_a_request(
    http: HttpClient, api_url: str, sink: DiscordSink
) -> None:
    with pytest.raises(UpstreamRejected, match="DISCORD_BOT_TOKEN"):
        await read_all(reader(http, api_url, None))
    assert sink.history.reads == 0


async def test_empty_buckets_are_waited_out_so_no_429_comes(
    http: HttpClient, api_url: str, sink: DiscordSink
) -> None:
    """A bucket of 2 reads per 0.3 s: the adapter waits for each reset the headers announce, and two
    readers of the same channel take turns (one request at a time on the route)."""
    sink.history.bucket_limit, sink.history.bucket_seconds, sink.history.latency = 2, 0.3, 0.02
    api = reader(http, api_url)
    first, second = await asyncio.gather(read_all(api), read_all(api))
    assert [len(p) for p in first] == [len(p) for p in second] == [100, 100, 50]
    assert sink.history.limited == 0
    assert sink.history.in_flight_max == 1


async def test_429s_are_retried_after_retry_after_and_the_read_completes(
    http: HttpClient, api_url: str, sink: DiscordSink
) -> None:
    sink.history.force_429, sink.history.forced_retry_after = 3, 0.2
    started = time.monotonic()
    pages = await read_all(reader(http, api_url))
    assert [len(p) for p in pages] == [100, 100, 50]
    assert sink.history.limited == 3
    assert time.monotonic() - started >= 3 * 0.2  # each retry_after was honoured


async def test_a_global_429_holds_every_route(http: HttpClient, api_url: str, sink: DiscordSink) -> None:
    """After a global 429 no route sends before retry_after has passed."""
    limits = RouteLimits()
    sink.history.global_limit, sink.history.bucket_limit = 1, 100
    api = DiscordApi(http, api_url, BOT_TOKEN, limits=limits)
    pages = await read_all(api)
    assert [len(p) for p in pages] == [100, 100, 50]
    assert 1 <= sink.history.limited <= 3  # at most one 429 per page: each taught the wait


async def test_endless_429s_give_up_after_a_few_waits(
    http: HttpClient, api_url: str, sink: DiscordSink
) -> None:
    sink.history.force_429, sink.history.forced_retry_after = 100, 0.01
    with pytest.raises(UpstreamUnavailable, match="still rate limited"):
        await read_all(reader(http, api_url))
    assert sink.history.limited == MAX_LIMITED + 1
    assert sum(sink.history.statuses.values()) == MAX_LIMITED + 1


async def test_cloudflares_ban_stops_at_once(http: HttpClient, api_url: str, sink: DiscordSink) -> None:
    """A 429 that is not Discord's JSON is the IP ban: no retry, a message that says so."""
    sink.ban_window.limit = 1
    sink.ban_window.record("client", sink.clock())
    with pytest.raises(UpstreamRejected, match="Cloudflare"):
        await read_all(reader(http, api_url))


async def redirecting(request: web.Request) -> web.Response:
    raise web.HTTPFound("https://elsewhere.example.org/api/v10/channels/900/messages")


def failing_twice(calls: list[int]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) <= 2:
            return web.json_response({"message": "500: Internal Server Error", "code": 0}, status=500)
        return web.json_response([])

    return handler


async def test_a_redirect_is_not_followed_and_the_token_stays_home(http: HttpClient) -> None:
    app = web.Application()
    app.router.add_get("/api/v10/channels/{channel}/messages", redirecting)
    async with serve(app) as url:
        with pytest.raises(UpstreamRejected) as stopped:
            await read_all(DiscordApi(http, f"{url}/api", BOT_TOKEN))
    assert "elsewhere.example.org" in str(stopped.value) and "DISCORD_API_URL" in str(stopped.value)
    assert_secret_free(stopped.value)


async def test_a_passing_5xx_costs_a_retry_not_the_command(http: HttpClient) -> None:
    app, calls = web.Application(), []
    app.router.add_get("/api/v10/channels/{channel}/messages", failing_twice(calls))
    async with serve(app) as url:
        assert await read_all(DiscordApi(http, f"{url}/api", BOT_TOKEN)) == []
    assert len(calls) == 3


async def test_no_answer_at_all_names_the_route_not_the_url(http: HttpClient) -> None:
    api = DiscordApi(http, "http://127.0.0.1:9/api", BOT_TOKEN)
    with pytest.raises(UpstreamUnavailable) as stopped:
        await api.webhook_channel("111", HOOK_TOKEN)
    assert "webhook 111" in str(stopped.value)
    assert_secret_free(stopped.value)


def test_snowflakes_of_the_double_and_the_adapter_agree() -> None:
    at = time_of(snowflake(T0))
    assert snowflake_at(at) == snowflake(T0)
