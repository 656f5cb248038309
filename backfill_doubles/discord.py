"""The Discord double: webhooks that enforce the limits a republishing backfill must respect, and the
channels' history a bot reads back (docs/upstreams.md §4).

`POST /api/webhooks/{id}/{token}` records the JSON body in `messages` and posts it to the webhook's
channel in `history` (`backfill_doubles.discord_history`, which also serves the read API: the webhook
object, a channel's messages); 204, or 200 with the message object for `?wait=true`. A webhook not
registered with `history.add_webhook` is its own channel, and the token it first posts with is its
token (another one is 401 code 50027). Limits, all sliding windows over accepted requests:
about 5 requests per 2 s per webhook (`webhook_window`) and 30 messages per minute per channel
(`channel_window`). Over a limit: 429 `{"message", "retry_after", "global"}` with `Retry-After`,
counted in `rate_limited`. 10,000 401/403/429 answers within 10 minutes (`ban_window`, reads
included) get the client "IP banned": every later request is a Cloudflare 429 "error code: 1015" and
`banned` is True. Embeds over Discord's size limits get 400 code 50035. The clocks are injectable so
tests move time instead of sleeping (`clock` for the limits, `wall_clock` for message ids and times).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from backfill_doubles.discord_history import ChannelHistory, rate_limited
from backfill_doubles.faults import Fault, FaultInjector

_EMBED_LIMITS = {"title": 256, "description": 4096}
_MAX_FIELDS, _MAX_FIELD_VALUE, _MAX_TOTAL, _MAX_EMBEDS = 25, 1024, 6000, 10


def _embed_text_length(embed: dict[str, Any]) -> int:
    fields = embed.get("fields") or []
    parts = [embed.get("title"), embed.get("description"), (embed.get("footer") or {}).get("text")]
    parts += [(embed.get("author") or {}).get("name")]
    parts += [str(field.get(key) or "") for field in fields for key in ("name", "value")]
    return sum(len(str(part)) for part in parts if part)


def _one_embed_problems(embed: dict[str, Any]) -> list[str]:
    problems = [
        f"{key} over {limit}"
        for key, limit in _EMBED_LIMITS.items()
        if len(str(embed.get(key) or "")) > limit
    ]
    fields = embed.get("fields") or []
    if len(fields) > _MAX_FIELDS:
        problems.append(f"more than {_MAX_FIELDS} fields")
    problems += [
        f"field {i} value over {_MAX_FIELD_VALUE}"
        for i, f in enumerate(fields)
        if len(str(f.get("value") or "")) > _MAX_FIELD_VALUE
    ]
    return problems


def embed_problems(body: dict[str, Any]) -> list[str]:
    """Every way `body` breaks Discord's embed limits; empty when it would be accepted."""
    embeds = body.get("embeds") or []
    problems = [f"embeds.{i}: {p}" for i, embed in enumerate(embeds) for p in _one_embed_problems(embed)]
    if len(embeds) > _MAX_EMBEDS:
        problems.append(f"more than {_MAX_EMBEDS} embeds")
    if sum(_embed_text_length(embed) for embed in embeds) > _MAX_TOTAL:
        problems.append(f"embeds over {_MAX_TOTAL} characters in total")
    return problems


def _invalid_body(body: Any) -> web.Response | None:
    """Discord's 400 for an empty message or oversized embeds; None when the body is fine."""
    if not isinstance(body, dict) or not (body.get("content") or body.get("embeds")):
        return web.json_response({"message": "Cannot send an empty message", "code": 50006}, status=400)
    problems = embed_problems(body)
    if problems:
        return web.json_response(
            {"message": "Invalid Form Body", "code": 50035, "errors": problems}, status=400
        )
    return None


class SlidingWindow:
    """At most `limit` events per `seconds`, per key."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._events: dict[str, deque[float]] = {}

    def wait_time(self, key: str, now: float) -> float:
        """Seconds until one more event is allowed for `key` (0 when allowed now)."""
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.seconds:
            events.popleft()
        if len(events) < self.limit:
            return 0.0
        return events[0] + self.seconds - now

    def record(self, key: str, now: float) -> None:
        self._events.setdefault(key, deque()).append(now)


class DiscordSink(FaultInjector):
    """Discord's webhook execute endpoint, rate limits included."""

    def __init__(
        self,
        seed: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(seed)
        self.clock = clock
        self.messages: list[dict[str, Any]] = []
        self.sent: Counter[str] = Counter()
        self.rate_limited = 0
        self.webhook_window = SlidingWindow(5, 2.0)
        self.channel_window = SlidingWindow(30, 60.0)
        self.ban_window = SlidingWindow(10_000, 600.0)
        self.history = ChannelHistory(
            wall_clock=wall_clock, clock=clock, refused=self._refused, banned=lambda: self.banned
        )

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this sink and the history's read API."""
        app = web.Application()
        app.router.add_post("/api/webhooks/{webhook_id}/{token}", self._execute)
        app.router.add_post("/api/v{version:\\d+}/webhooks/{webhook_id}/{token}", self._execute)
        self.history.routes(app)
        app.router.add_get("/messages", self._list)
        return app

    def _refused(self) -> None:
        self.ban_window.record("client", self.clock())

    @property
    def banned(self) -> bool:
        """Whether enough 429s were collected recently to get the client banned."""
        return self.ban_window.wait_time("client", self.clock()) > 0

    def _limited(self, retry_after: float, scope: str) -> web.Response:
        self.rate_limited += 1
        self._refused()
        headers = {
            "X-RateLimit-Limit": str(self.webhook_window.limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        }
        return rate_limited(retry_after, scope, headers)

    def _rate_check(self, webhook_id: str, channel: str, now: float) -> web.Response | None:
        webhook_wait = self.webhook_window.wait_time(webhook_id, now)
        if webhook_wait > 0:
            return self._limited(webhook_wait, "user")
        channel_wait = self.channel_window.wait_time(channel, now)
        if channel_wait > 0:
            return self._limited(channel_wait, "shared")
        self.webhook_window.record(webhook_id, now)
        self.channel_window.record(channel, now)
        return None

    def _refusal(self, webhook_id: str, token: str) -> web.Response | None:
        """The ban, token or rate-limit answer for this request, if any."""
        if self.banned:
            return web.Response(status=429, text="error code: 1015")
        channel = self.history.channel_of(webhook_id, token)
        if self.history.webhooks[webhook_id].token != token:
            self._refused()
            return web.json_response({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        return self._rate_check(webhook_id, channel, self.clock())

    async def _execute(self, request: web.Request) -> web.Response:
        fault = self.draw()
        await self.delay(fault)
        if fault in (Fault.FAIL, Fault.TIMEOUT):
            return web.json_response({"message": "500: Internal Server Error", "code": 0}, status=500)
        webhook_id = request.match_info["webhook_id"]
        refusal = self._refusal(webhook_id, request.match_info["token"])
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except ValueError:
            body = None
        invalid = _invalid_body(body)
        if invalid is not None:
            return invalid
        self.messages.append(body)
        self.sent[webhook_id] += 1
        message = self.history.post(webhook_id, body)
        if request.query.get("wait", "").lower() != "true":
            return web.Response(status=204)
        return web.json_response(message)

    async def _list(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"messages": self.messages, "sent": dict(self.sent), "rate_limited": self.rate_limited}
        )
