"""A faithful local double of PMOVES.yt's transcript search (docs/upstreams.md §8).

`POST /yt/search` takes a JSON object `{query, limit=10, threshold=0.70, namespace="pmoves"}`:

- a body that is not a JSON object, or a limit or threshold that is not a number: 422 (FastAPI's
  validation answer);
- no query, or a blank one: 400 `{"detail": "query required"}`;
- its Hi-RAG backend failing: 502 `{"detail": ...}` (the fault knobs of `FaultInjector`: `fail_next`,
  `fail_rate` and `timeout_rate` answer 502; `hang_rate` / `hang_seconds` / `latency` delay the answer);
- else 200 `{ok: true, query, results: [{video_id, title, url, similarity, excerpt, timestamp}], total}`:
  the namespace's videos whose similarity is at least the threshold, best first, at most `limit`.

The similarity is the cosine of the word counts of the query and of a video's title, rounded to four
places: deterministic, so a test knows which videos match. `requests` keeps every body received (and
`headers` their headers), `answers` every 200 answer, in order.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from backfill_doubles.faults import Fault, FaultInjector

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DEFAULT_LIMIT = 10
DEFAULT_THRESHOLD = 0.70
DEFAULT_NAMESPACE = "pmoves"
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text: str) -> Counter[str]:
    return Counter(word.casefold() for word in _WORD.findall(text))


def similarity(query: str, title: str) -> float:
    """Cosine of the word counts of `query` and `title`, rounded to four places."""
    left, right = words(query), words(title)
    dot = sum(count * right[word] for word, count in left.items())
    norm = math.sqrt(sum(c * c for c in left.values())) * math.sqrt(sum(c * c for c in right.values()))
    return round(dot / norm, 4) if norm else 0.0


@dataclass(frozen=True)
class Video:
    video_id: str
    title: str
    transcript: str
    namespace: str = DEFAULT_NAMESPACE
    timestamp: float = 0.0  # where the excerpt starts, in seconds

    @property
    def url(self) -> str:
        return f"https://www.youtube.com/watch?v={self.video_id}"


def _invalid(loc: str, message: str, value: Any) -> web.Response:
    detail = [{"type": "value_error", "loc": ["body", loc], "msg": message, "input": value}]
    return web.json_response({"detail": detail}, status=422)


def _number(body: dict[str, Any], key: str, default: float) -> float | None:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class PmovesYtDouble(FaultInjector):
    """PMOVES.yt's `/yt/search` over an in-memory corpus of videos."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.videos: list[Video] = []
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []  # each request's headers (the service takes no credentials)
        self.answers: list[dict[str, Any]] = []

    def add_video(
        self, video_id: str, title: str, transcript: str = "", namespace: str = DEFAULT_NAMESPACE
    ) -> Video:
        video = Video(video_id, title, transcript or f"Transcript of {title}.", namespace)
        self.videos.append(video)
        return video

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/yt/search", self._search, name="search")
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name is None:
            return await handler(request)
        self.headers.append(dict(request.headers))
        fault = self.draw()
        await self.delay(fault)
        if fault in (Fault.FAIL, Fault.TIMEOUT):
            self.requests.append(await self._body_or_text(request))
            return web.json_response({"detail": "hi-rag search failed: upstream unavailable"}, status=502)
        return await handler(request)

    @staticmethod
    async def _body_or_text(request: web.Request) -> Any:
        text = await request.text()
        try:
            return json.loads(text)
        except ValueError:
            return text

    def search(self, query: str, limit: int, threshold: float, namespace: str) -> list[dict[str, Any]]:
        """The results the service gives: best first (ties in corpus order), at most `limit`."""
        scored = [(similarity(query, v.title), v) for v in self.videos if v.namespace == namespace]
        kept = sorted((pair for pair in scored if pair[0] >= threshold), key=lambda pair: -pair[0])
        return [
            {
                "video_id": video.video_id,
                "title": video.title,
                "url": video.url,
                "similarity": score,
                "excerpt": video.transcript[:400],
                "timestamp": video.timestamp,
            }
            for score, video in kept[: max(limit, 0)]
        ]

    async def _search(self, request: web.Request) -> web.Response:
        body = await self._body_or_text(request)
        self.requests.append(body)
        if not isinstance(body, dict):
            return _invalid("body", "Input should be a valid dictionary", body)
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            return web.json_response({"detail": "query required"}, status=400)
        limit = _number(body, "limit", DEFAULT_LIMIT)
        threshold = _number(body, "threshold", DEFAULT_THRESHOLD)
        if limit is None or threshold is None:
            return _invalid("limit" if limit is None else "threshold", "Input should be a valid number", body)
        namespace = body.get("namespace") or DEFAULT_NAMESPACE
        results = self.search(query, int(limit), threshold, str(namespace))
        answer = {"ok": True, "query": query, "results": results, "total": len(results)}
        self.answers.append(answer)
        return web.json_response(answer)
