"""DiscordSink enforces the webhook limits a republishing backfill must respect (docs/upstreams.md §4)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from backfill_doubles.discord import DiscordSink, SlidingWindow
from backfill_doubles.serve import serve

EMBED = {
    "embeds": [{"title": "Demo", "description": "d", "fields": [{"name": "Duration", "value": "0:00:12"}]}]
}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink(clock: FakeClock) -> DiscordSink:
    return DiscordSink(clock=clock)


@pytest.fixture
async def http(sink: DiscordSink) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(sink.app()) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def post(http: httpx.AsyncClient, webhook: str = "111", body: object = EMBED) -> httpx.Response:
    return await http.post(f"/api/webhooks/{webhook}/token", json=body)


async def test_sixth_request_within_two_seconds_is_429(sink: DiscordSink, http: httpx.AsyncClient) -> None:
    """About 5 requests per 2 s per webhook: the sixth gets 429 with retry_after and Retry-After."""
    statuses = [(await post(http)).status_code for _ in range(5)]
    limited = await post(http)
    assert statuses == [204] * 5
    assert limited.status_code == 429
    body = limited.json()
    assert body["message"] == "You are being rate limited."
    assert body["global"] is False
    assert 0 < body["retry_after"] <= 2.0
    assert float(limited.headers["Retry-After"]) >= body["retry_after"]
    assert sink.rate_limited == 1
    assert len(sink.messages) == 5


async def test_window_slides_after_two_seconds(clock: FakeClock, http: httpx.AsyncClient) -> None:
    """Once the oldest request is 2 s old, one more is allowed."""
    for _ in range(5):
        await post(http)
        clock.now += 0.3
    assert (await post(http)).status_code == 429
    clock.now += 2.0 - 5 * 0.3 + 0.01
    assert (await post(http)).status_code == 204


async def test_webhooks_are_limited_independently(http: httpx.AsyncClient) -> None:
    """The 5 per 2 s bucket is per webhook."""
    for _ in range(5):
        await post(http, "111")
    assert (await post(http, "222")).status_code == 204
    assert (await post(http, "111")).status_code == 429


async def test_channel_allows_30_messages_a_minute(
    sink: DiscordSink, clock: FakeClock, http: httpx.AsyncClient
) -> None:
    """30 messages per minute per channel, even when paced under the per-webhook limit."""
    for _ in range(30):
        assert (await post(http)).status_code == 204
        clock.now += 0.5
    limited = await post(http)
    assert limited.status_code == 429
    assert limited.headers["X-RateLimit-Scope"] == "shared"
    assert sink.sent["111"] == 30


async def test_embed_over_the_limits_is_400(http: httpx.AsyncClient) -> None:
    """A title over 256 characters (or too many fields) is refused with code 50035."""
    too_long = {"embeds": [{"title": "x" * 257}]}
    too_many = {"embeds": [{"title": "t", "fields": [{"name": "n", "value": "v"}] * 26}]}
    for body in (too_long, too_many):
        response = await post(http, body=body)
        assert (response.status_code, response.json()["code"]) == (400, 50035)


async def test_empty_message_is_400(http: httpx.AsyncClient) -> None:
    """No content and no embeds is code 50006."""
    response = await post(http, body={})
    assert (response.status_code, response.json()["code"]) == (400, 50006)


async def test_wait_true_returns_the_message(http: httpx.AsyncClient) -> None:
    """?wait=true answers 200 with the created message instead of 204: a snowflake id, the webhook's id,
    the embeds as Discord returns them (typed "rich")."""
    response = await http.post("/api/webhooks/111/token", params={"wait": "true"}, json=EMBED)
    assert response.status_code == 200
    message = response.json()
    assert message["embeds"] == [{"type": "rich", **EMBED["embeds"][0]}]
    assert message["webhook_id"] == "111" and message["id"].isdigit()


async def test_a_webhook_answers_only_its_own_token(sink: DiscordSink, http: httpx.AsyncClient) -> None:
    """The token a webhook is registered (or first posts) with is its token: another one is 401 50027."""
    sink.history.add_webhook("222", "right", "900")
    wrong = await http.post("/api/webhooks/222/wrong", json=EMBED)
    assert (wrong.status_code, wrong.json()["code"]) == (401, 50027)
    assert (await http.post("/api/webhooks/222/right", json=EMBED)).status_code == 204
    assert [m["channel_id"] for m in sink.history.channels["900"]] == ["900"]


async def test_get_messages_returns_what_was_recorded(http: httpx.AsyncClient) -> None:
    """GET /messages lists the recorded bodies and the 429 count, for a demo summary."""
    for _ in range(6):
        await post(http)
    summary = (await http.get("/messages")).json()
    assert summary["messages"] == [EMBED] * 5
    assert summary["rate_limited"] == 1
    assert summary["sent"] == {"111": 5}


async def test_too_many_429s_get_the_client_banned(sink: DiscordSink, http: httpx.AsyncClient) -> None:
    """Collecting too many 429s in 10 minutes bans the client from every webhook."""
    sink.ban_window = SlidingWindow(3, 600.0)
    for _ in range(8):
        await post(http, "111")
    assert sink.banned
    banned = await post(http, "222")
    assert (banned.status_code, banned.text) == (429, "error code: 1015")
