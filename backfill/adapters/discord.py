"""Discord's REST API, read side (docs/upstreams.md §4): the channel a webhook posts to, and that
channel's messages since a moment, for `producer verify --source discord`. The `ChannelReader` port.

Discord's rules, kept here:
- one request at a time per route (a channel's messages; a webhook), and none while the route's bucket
  is empty: an answer with `X-RateLimit-Remaining: 0` holds the route for `X-RateLimit-Reset-After`
  seconds, a 429 for its `retry_after` (every route when `global` is true); at most `MAX_LIMITED` 429s
  in a row, then the command stops;
- 401, 403 and 404 stop at once with what to fix, never retried (10,000 answers 401/403/429 within
  10 minutes get the IP banned), and so does Cloudflare's ban itself (a 429 that is not JSON);
- the bot token and the webhook's token are sent only to the API's host (no redirect is followed) and
  appear in no error or log line: errors name the route, never the URL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import yarl

from backfill.adapters.transport import HttpClient, HttpResponse, is_transient, retry_after_seconds, send
from backfill.core.embeds import ChannelMessage
from backfill.core.errors import NotFound, UpstreamError, UpstreamRejected, UpstreamUnavailable

SERVICE = "discord"
PAGE = 100  # Discord's largest page
MAX_LIMITED = 5  # 429s in a row on one request before giving up
TRANSIENT_TRIES = 3  # no answer, or a 5xx: tries of one request
BACKOFF = 0.5  # seconds before the second try of a transient failure (doubled after)

Waiting = Callable[[float, str], None]  # (seconds, why): told before every wait of a second or more


class _Message(msgspec.Struct):
    id: str
    webhook_id: str | None = None
    embeds: list[dict[str, Any]] = []


_messages_decoder = msgspec.json.Decoder(list[_Message])


class _Webhook(msgspec.Struct):
    channel_id: str


def api_base(api_url: str) -> str:
    """`{api}/v10` unless the URL already names a version."""
    base = api_url.rstrip("/")
    last = base.rsplit("/", 1)[-1]
    return base if last.startswith("v") and last[1:].isdigit() else f"{base}/v10"


class RouteLimits:
    """What Discord's answers said about each route's bucket, and one request at a time per route."""

    def __init__(
        self,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        waiting: Waiting = lambda _s, _why: None,
    ) -> None:
        self._sleep, self._clock, self._waiting = sleep, clock, waiting
        self._locks: dict[str, asyncio.Lock] = {}
        self._held: dict[str, float] = {}  # route -> when its bucket refills (clock)
        self._global = 0.0

    @asynccontextmanager
    async def turn(self, route: str) -> AsyncIterator[None]:
        """The route to oneself, once its bucket (and the global limit) allow a request."""
        async with self._locks.setdefault(route, asyncio.Lock()):
            wait = max(self._held.get(route, 0.0), self._global) - self._clock()
            if wait > 0:
                if wait >= 1:
                    self._waiting(wait, "Discord's rate limit")
                await self._sleep(wait)
            yield

    def learn(self, route: str, response: HttpResponse) -> None:
        """An empty bucket holds the route until it refills."""
        if response.headers.get("x-ratelimit-remaining") != "0":
            return
        try:
            reset_after = float(response.headers.get("x-ratelimit-reset-after", ""))
        except ValueError:
            return
        self.hold(route, reset_after, everywhere=False)

    def hold(self, route: str, seconds: float, *, everywhere: bool) -> None:
        until = self._clock() + max(seconds, 0.0)
        if everywhere:
            self._global = max(self._global, until)
        else:
            self._held[route] = max(self._held.get(route, 0.0), until)


def _discord_error(response: HttpResponse) -> tuple[Any, str]:
    """(code, message) of Discord's JSON error body; (None, "") when it is not one."""
    try:
        body = response.json()
    except ValueError:
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    return body.get("code"), str(body.get("message") or "")[:200]


class DiscordApi:
    """The `ChannelReader` port on Discord's REST API (or anything serving it, such as a proxy)."""

    def __init__(
        self, http: HttpClient, api_url: str, bot_token: str | None, *, limits: RouteLimits | None = None
    ) -> None:
        self._http = http
        self._base = api_base(api_url)
        self._host = yarl.URL(self._base).host or "the API"
        self._bot_token = bot_token
        self._limits = limits or RouteLimits()

    async def webhook_channel(self, webhook_id: str, webhook_token: str) -> str:
        """The id of the channel the webhook posts to (the webhook's own token is the credential)."""
        url = f"{self._base}/webhooks/{webhook_id}/{webhook_token}"
        response = await self._get(f"webhook {webhook_id}", url, {}, {})
        try:
            return msgspec.json.decode(response.content, type=_Webhook).channel_id
        except msgspec.DecodeError:
            raise UpstreamUnavailable(SERVICE, f"webhook {webhook_id}: unreadable answer") from None

    async def messages_since(self, channel_id: str, after: int) -> AsyncIterator[list[ChannelMessage]]:
        """The channel's messages with an id above `after`, page by page, newest first."""
        before: int | None = None
        while True:
            params: dict[str, str | int] = {"limit": PAGE, **({"before": before} if before else {})}
            page = await self._page(channel_id, params)
            inside = [message for message in page if message.id > after]
            if inside:
                yield inside
            if len(page) < PAGE or len(inside) < len(page):
                return
            before = min(message.id for message in page)

    async def _page(self, channel_id: str, params: Mapping[str, str | int]) -> list[ChannelMessage]:
        if not self._bot_token:
            raise UpstreamRejected(SERVICE, "reading a channel needs DISCORD_BOT_TOKEN (a bot's token)")
        url = f"{self._base}/channels/{channel_id}/messages"
        headers = {"Authorization": f"Bot {self._bot_token}"}
        response = await self._get(f"channel {channel_id}", url, params, headers)
        try:
            messages = _messages_decoder.decode(response.content)
        except msgspec.DecodeError:
            raise UpstreamUnavailable(SERVICE, f"channel {channel_id}: unreadable messages") from None
        return [ChannelMessage(int(m.id), m.webhook_id, tuple(m.embeds)) for m in messages if m.id.isdigit()]

    async def _get(
        self, route: str, url: str, params: Mapping[str, str | int], headers: Mapping[str, str]
    ) -> HttpResponse:
        """One GET on `route` under Discord's rules; the 200 answer, or the error to stop with."""
        limited = failed = 0
        while True:
            async with self._limits.turn(route):
                response = await self._send(
                    route, url, params, headers, last_try=failed + 1 >= TRANSIENT_TRIES
                )
                if response is not None:
                    self._limits.learn(route, response)
            if response is not None and response.is_success:
                return response
            if response is not None and response.status_code == 429:
                limited += 1
                self._rate_limited(route, response, limited)
                continue
            if response is not None and (
                not is_transient(response.status_code) or failed + 1 >= TRANSIENT_TRIES
            ):
                raise self._refusal(route, response)
            failed += 1
            await asyncio.sleep(BACKOFF * 2 ** (failed - 1))

    async def _send(
        self,
        route: str,
        url: str,
        params: Mapping[str, str | int],
        headers: Mapping[str, str],
        *,
        last_try: bool,
    ) -> HttpResponse | None:
        """The answer; None after a transport failure worth another try (else raised, without the URL)."""
        try:
            return await send(self._http, SERVICE, "GET", url, params=params, headers=headers)
        except UpstreamError as exc:
            if isinstance(exc, UpstreamUnavailable) and not last_try:
                return None
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "no answer"
            raise type(exc)(SERVICE, f"{route}: {self._host} did not answer ({cause})") from None

    def _rate_limited(self, route: str, response: HttpResponse, limited: int) -> None:
        """Hold the route (or every route) for the 429's `retry_after`; raise when it must stop."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise UpstreamRejected(
                SERVICE,
                f"{route}: {self._host} refuses this IP for now (Cloudflare's ban, after too many 401, 403 or"
                " 429 answers); stop, and try again in an hour",
                status=429,
            )
        retry_after = body.get("retry_after")
        seconds = (
            float(retry_after) if isinstance(retry_after, int | float) else retry_after_seconds(response)
        )
        if limited > MAX_LIMITED:
            raise UpstreamUnavailable(
                SERVICE, f"{route}: still rate limited after {MAX_LIMITED} waits; try again later", status=429
            )
        self._limits.hold(
            route, seconds if seconds is not None else 1.0, everywhere=body.get("global") is True
        )

    def _refusal(self, route: str, response: HttpResponse) -> UpstreamError | NotFound:
        """The error that stops the command: what Discord said, and what to fix."""
        status, (code, message) = response.status_code, _discord_error(response)
        said = f"{status} {message or response.reason_phrase}".strip()
        said += f", code {code}" if code is not None else ""
        kind = route.split(maxsplit=1)[0]  # "channel" or "webhook"
        if status == 404:
            return NotFound(
                f"{SERVICE}: {route}: {said}: Discord knows no such {kind}; check {_SETTING[kind]}"
            )
        if status in (401, 403):
            return UpstreamRejected(SERVICE, f"{route}: {said}: {_FIX[kind, status]}", status=status)
        if 300 <= status < 400:
            target = yarl.URL(response.headers.get("location", "")).host or "the same host"
            return UpstreamRejected(
                SERVICE,
                f"{route}: {status} redirect to {target}; redirects are not followed (the token stays with"
                " its host): set DISCORD_API_URL to the address that answers",
                status=status,
            )
        error = UpstreamUnavailable if is_transient(status) else UpstreamRejected
        return error(SERVICE, f"{route}: {said}", status=status)


_SETTING = {"channel": "DISCORD_CHANNEL_ID (or the webhook's channel)", "webhook": "DISCORD_WEBHOOK_URL"}
_FIX = {
    (
        "channel",
        401,
    ): "DISCORD_BOT_TOKEN is not a valid bot token (the bot's token from the Developer Portal)",
    ("channel", 403): "the bot lacks access: in that channel, give it View Channel and Read Message History",
    ("webhook", 401): "the token in DISCORD_WEBHOOK_URL is not this webhook's: copy the webhook URL again",
    ("webhook", 403): "Discord refused to show the webhook: check DISCORD_WEBHOOK_URL",
}
