"""The read side of the Discord double: the channels' history, as Discord's REST API serves it to a bot
(docs/upstreams.md §4, "Reading a channel back").

- `GET /api/webhooks/{id}/{token}`: the webhook object (`id`, `type` 1, `channel_id`, `name`, `token`)
  with no other credential; 401 `{"code": 50027}` for a wrong token, 404 `{"code": 10015}` for an
  unknown webhook.
- `GET /api[/v{n}]/channels/{channel_id}/messages?limit=&before=|after=`, only with
  `Authorization: Bot <token>` of a known bot (else 401 `{"code": 0}`); 404 `{"code": 10003,
  "message": "Unknown Channel"}`; 403 `{"code": 50001, "message": "Missing Access"}` for a bot without
  View Channel there; without Read Message History, 200 and no messages (Discord's own trap). `limit`
  1-100 (default 50) and snowflake `before` / `after` (else 400 `{"code": 50035}`). Newest first;
  with `after`, the `limit` messages right after it (still newest first).
- Rate limits: one bucket per bot and channel, `bucket_limit` requests per `bucket_seconds` (fixed
  windows, as Discord's buckets reset), and a global `global_limit` per second per bot. Every answer
  carries `X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Reset-After`, `-Bucket`; over a limit, 429
  `{"message", "retry_after", "global"}` with `Retry-After` and `X-RateLimit-Scope`. `force_429`
  answers the next N reads 429 (`forced_retry_after`) whatever the bucket says (Discord's shared limits
  do that).
- Every 401, 403 and 429 is reported to `refused` (the sink's ban count: 10,000 in 10 minutes ban);
  once `banned()`, every read is Cloudflare's 429 "error code: 1015".

Messages posted through a webhook carry `webhook_id`, an `author` with the webhook's name, `embeds`
(each with `type` "rich", as Discord returns them) and a snowflake id from `wall_clock`.
`add_message` seeds history at any time (an old live embed). `in_flight_max` is the most read
requests one route had at once, for tests of a client that must send one at a time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

DISCORD_EPOCH_MS = 1_420_070_400_000
READ = ("VIEW_CHANNEL", "READ_MESSAGE_HISTORY")
_UNAUTHORIZED = {"message": "401: Unauthorized", "code": 0}


def snowflake(when: float, increment: int = 0) -> int:
    """A snowflake for a wall-clock time (seconds since the Unix epoch)."""
    return ((int(when * 1000) - DISCORD_EPOCH_MS) << 22) | (increment & 0xFFF)


def _invalid(name: str, code: str, message: str) -> web.Response:
    errors = {name: {"_errors": [{"code": code, "message": message}]}}
    return web.json_response({"message": "Invalid Form Body", "code": 50035, "errors": errors}, status=400)


@dataclass
class Bucket:
    """A fixed window: `count` requests since `opened` (monotonic seconds)."""

    opened: float = 0.0
    count: int = 0


@dataclass
class Webhook:
    id: str
    token: str
    channel_id: str
    name: str = "PMOVES"


@dataclass
class ChannelHistory:
    wall_clock: Callable[[], float] = time.time
    clock: Callable[[], float] = time.monotonic
    refused: Callable[[], None] = lambda: None
    banned: Callable[[], bool] = lambda: False
    bucket_limit: int = 5
    bucket_seconds: float = 5.0
    global_limit: int = 50
    latency: float = 0.0  # seconds each read takes (to see concurrent requests)
    force_429: int = 0
    forced_retry_after: float = 1.0
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    channels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # oldest first
    bots: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # token -> channel -> permissions
    reads: int = 0  # reads past auth, access and validation (the ones a bucket counts)
    statuses: Counter[int] = field(default_factory=Counter)  # every read answered, by status
    limited: int = 0  # 429s answered to reads
    in_flight_max: int = 0
    _buckets: dict[str, Bucket] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _last_id: int = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/webhooks/{webhook_id}/{token}", self._webhook)
        app.router.add_get("/api/v{version:\\d+}/webhooks/{webhook_id}/{token}", self._webhook)
        app.router.add_get("/api/channels/{channel_id}/messages", self._messages)
        app.router.add_get("/api/v{version:\\d+}/channels/{channel_id}/messages", self._messages)

    def add_webhook(self, webhook_id: str, token: str, channel_id: str, name: str = "PMOVES") -> Webhook:
        self.webhooks[webhook_id] = Webhook(webhook_id, token, channel_id, name)
        self.channels.setdefault(channel_id, [])
        return self.webhooks[webhook_id]

    def add_bot(self, token: str, channel_id: str, permissions: tuple[str, ...] = READ) -> None:
        self.bots.setdefault(token, {})[channel_id] = set(permissions)

    def channel_of(self, webhook_id: str, token: str) -> str:
        """The webhook's channel; a webhook first seen posting is its own channel."""
        known = self.webhooks.get(webhook_id) or self.add_webhook(webhook_id, token, webhook_id)
        return known.channel_id

    def _next_id(self, when: float) -> int:
        self._last_id = max(snowflake(when), self._last_id + 1)
        return self._last_id

    def post(self, webhook_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store what a webhook posted; the message object."""
        hook = self.webhooks[webhook_id]
        author = {"id": hook.id, "username": body.get("username") or hook.name, "bot": True}
        return self.add_message(hook.channel_id, body, webhook_id=hook.id, author=author)

    def add_message(
        self,
        channel_id: str,
        body: dict[str, Any],
        *,
        webhook_id: str | None = None,
        author: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> dict[str, Any]:
        """A message in `channel_id`, posted at `at` (wall clock; now by default)."""
        when = self.wall_clock() if at is None else at
        message_id = (
            self._next_id(when) if at is None else snowflake(when, len(self.channels.get(channel_id, [])))
        )
        message = {
            "id": str(message_id),
            "type": 0,
            "channel_id": channel_id,
            "author": author or {"id": "1", "username": "someone"},
            "content": body.get("content") or "",
            "timestamp": datetime.fromtimestamp(when, UTC).isoformat(),
            "edited_timestamp": None,
            "embeds": [{"type": "rich", **embed} for embed in body.get("embeds") or []],
            "attachments": [],
            "mentions": [],
        }
        if webhook_id is not None:
            message["webhook_id"] = webhook_id
        history = self.channels.setdefault(channel_id, [])
        history.append(message)
        history.sort(key=lambda m: int(m["id"]))
        return message

    async def _webhook(self, request: web.Request) -> web.Response:
        answer = self._webhook_answer(request)
        self.statuses[answer.status] += 1
        return answer

    def _webhook_answer(self, request: web.Request) -> web.Response:
        if self.banned():
            return web.Response(status=429, text="error code: 1015")
        hook = self.webhooks.get(request.match_info["webhook_id"])
        if hook is None:
            return web.json_response({"message": "Unknown Webhook", "code": 10015}, status=404)
        if hook.token != request.match_info["token"]:
            self.refused()
            return web.json_response({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        body = {
            "id": hook.id,
            "type": 1,
            "channel_id": hook.channel_id,
            "name": hook.name,
            "token": hook.token,
        }
        return web.json_response({**body, "guild_id": None, "avatar": None, "application_id": None})

    def _bot(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token if scheme == "Bot" and token in self.bots else None

    async def _messages(self, request: web.Request) -> web.Response:
        answer = await self._messages_answer(request)
        self.statuses[answer.status] += 1
        return answer

    async def _messages_answer(self, request: web.Request) -> web.Response:
        token, channel_id = self._bot(request), request.match_info["channel_id"]
        if self.banned():
            return web.Response(status=429, text="error code: 1015")
        if token is None:
            self.refused()
            return web.json_response(_UNAUTHORIZED, status=401)
        if channel_id not in self.channels:
            return web.json_response({"message": "Unknown Channel", "code": 10003}, status=404)
        permissions = self.bots[token].get(channel_id, set())
        if "VIEW_CHANNEL" not in permissions:
            self.refused()
            return web.json_response({"message": "Missing Access", "code": 50001}, status=403)
        query = _read_query(request)
        if isinstance(query, web.Response):
            return query
        route = f"{token}:{channel_id}"
        self._in_flight[route] = self._in_flight.get(route, 0) + 1
        self.in_flight_max = max(self.in_flight_max, self._in_flight[route])
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return self._answer(token, route, channel_id, query, "READ_MESSAGE_HISTORY" in permissions)
        finally:
            self._in_flight[route] -= 1

    def _answer(
        self,
        token: str,
        route: str,
        channel_id: str,
        query: tuple[int, int | None, int | None],
        history: bool,
    ) -> web.Response:
        self.reads += 1
        now = self.clock()
        global_wait = self._take(f"global:{token}", self.global_limit, 1.0, now)
        if global_wait > 0 or self.force_429 > 0:
            forced = global_wait <= 0
            self.force_429 -= int(forced)
            wait = global_wait if global_wait > 0 else self.forced_retry_after
            return self._limited(wait, is_global=not forced, now=now)
        wait = self._take(route, self.bucket_limit, self.bucket_seconds, now)
        if wait > 0:
            return self._limited(wait, is_global=False, now=now, route=route)
        limit, before, after = query
        page = _page(self.channels[channel_id], limit, before, after) if history else []
        return web.json_response(page, headers=self._headers(route, now))

    def _take(self, key: str, limit: int, seconds: float, now: float) -> float:
        """Count one request in `key`'s window; the seconds to wait instead when it is full."""
        bucket = self._buckets.setdefault(key, Bucket(now, 0))
        if now >= bucket.opened + seconds:
            bucket.opened, bucket.count = now, 0
        if bucket.count >= limit:
            return bucket.opened + seconds - now
        bucket.count += 1
        return 0.0

    def _headers(self, route: str, now: float) -> dict[str, str]:
        bucket = self._buckets[route]
        reset_after = max(bucket.opened + self.bucket_seconds - now, 0.0)
        return {
            "X-RateLimit-Limit": str(self.bucket_limit),
            "X-RateLimit-Remaining": str(max(self.bucket_limit - bucket.count, 0)),
            "X-RateLimit-Reset": f"{self.wall_clock() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"messages-{abs(hash(route)) % 10**8:08d}",
        }

    def _limited(
        self, retry_after: float, *, is_global: bool, now: float, route: str | None = None
    ) -> web.Response:
        self.limited += 1
        self.refused()
        headers = {"X-RateLimit-Global": "true"} if is_global else {}
        if route is not None and not is_global:
            headers = self._headers(route, now)
        return rate_limited(retry_after, "global" if is_global else "user", headers, is_global=is_global)


def rate_limited(
    retry_after: float, scope: str, headers: dict[str, str], *, is_global: bool = False
) -> web.Response:
    """Discord's 429: `retry_after` and `global` in the body, `Retry-After` and the scope as headers."""
    body = {
        "message": "You are being rate limited.",
        "retry_after": round(retry_after, 3),
        "global": is_global,
    }
    scoped = {"Retry-After": str(math.ceil(retry_after)), "X-RateLimit-Scope": scope, **headers}
    return web.json_response(body, status=429, headers=scoped)


def _read_query(request: web.Request) -> tuple[int, int | None, int | None] | web.Response:
    """(limit, before, after) from the query, or Discord's 400 for a bad one."""
    raw = request.query.get("limit", "50")
    if not raw.isdigit():
        return _invalid("limit", "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.')
    limit = int(raw)
    if not 1 <= limit <= 100:
        return _invalid(
            "limit", "NUMBER_TYPE_MAX" if limit > 100 else "NUMBER_TYPE_MIN", "limit must be 1-100"
        )
    ids: list[int | None] = []
    for name in ("before", "after"):
        value = request.query.get(name)
        if value is not None and not value.isdigit():
            return _invalid(name, "NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.')
        ids.append(int(value) if value is not None else None)
    return limit, ids[0], ids[1]


def _page(
    history: list[dict[str, Any]], limit: int, before: int | None, after: int | None
) -> list[dict[str, Any]]:
    """Newest first; with `after` the `limit` messages right after it, else the newest before `before`."""
    if after is not None:
        return list(reversed([m for m in history if int(m["id"]) > after][:limit]))
    older = [m for m in history if before is None or int(m["id"]) < before]
    return list(reversed(older[-limit:]))
