"""The one shared HTTP client and the boundary where HTTP failures become project errors.

docs/upstreams.md §7 and `make bench`: HTTP is this workload's bottleneck. httpx's default pool collapses
past ~16 concurrent requests, and even over the aiohttp transport httpx's request and response models cost as
much CPU per request as aiohttp itself (py-spy on a worker: ~20 % of all samples in httpx). So the
workers and the producer talk to upstreams through a thin client on one `aiohttp.ClientSession`: bytes
in, bytes out, no cookie jar. Build it once per process and pass it to every adapter.
"""

from __future__ import annotations

import json as jsonlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import msgspec
import yarl
from multidict import CIMultiDictProxy

from backfill.errors import UpstreamRejected, UpstreamUnavailable

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# Called after every request with (service, HTTP status or None when no answer came, seconds).
Observer = Callable[[str, int | None, float], None]
Params = Mapping[str, str | int]
_json_encoder = msgspec.json.Encoder()


def no_observer(_service: str, _status: int | None, _seconds: float) -> None:
    return None


class HttpResponse:
    """A complete answer: status, headers (case-insensitive) and the body, already read."""

    __slots__ = ("content", "headers", "method", "path", "reason_phrase", "status_code")

    def __init__(
        self,
        status_code: int,
        headers: Mapping[str, str],
        content: bytes,
        method: str,
        path: str,
        reason_phrase: str = "",
    ) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        self.method = method
        self.path = path
        self.reason_phrase = reason_phrase

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON."""
        return jsonlib.loads(self.content)


class HttpClient:
    """One pooled aiohttp session for every upstream (created on first use, inside the running loop)."""

    def __init__(self, timeout: float, max_connections: int = 100) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=self._max_connections)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
    ) -> HttpResponse:
        session = self._session or self._open()
        data = content
        if json is not None:
            data = _json_encoder.encode(json)
            headers = {**(headers or {}), "Content-Type": "application/json"}
        query = {k: str(v) for k, v in params.items()} if params else None
        async with session.request(method, url, params=query, headers=headers, data=data) as response:
            body = await response.read()
            answer_headers: CIMultiDictProxy[str] = response.headers
            return HttpResponse(
                response.status, answer_headers, body, method, response.url.path, response.reason or ""
            )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_client(timeout: float, max_connections: int = 100) -> HttpClient:
    """The one client of a process; `max_connections` bounds its pool across all upstreams."""
    return HttpClient(timeout, max_connections)


def retry_after_seconds(response: HttpResponse) -> float | None:
    """Parse Retry-After (seconds or HTTP date); None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError):
        return None


async def send(
    client: HttpClient,
    service: str,
    method: str,
    url: str,
    observe: Observer = no_observer,
    **kwargs: Any,
) -> HttpResponse:
    """Send one request; a transport failure raises UpstreamUnavailable naming the service."""
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except (aiohttp.ClientError, TimeoutError) as exc:
        observe(service, None, time.perf_counter() - started)
        raise UpstreamUnavailable(
            service, f"{method} {_path(url)} failed: {type(exc).__name__}: {exc}"
        ) from exc
    observe(service, response.status_code, time.perf_counter() - started)
    return response


def _path(url: str) -> str:
    """The path alone, for error messages: never a query string that might carry a key."""
    return str(yarl.URL(url).path)


def error_detail(response: HttpResponse, limit: int = 300) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:limit] if text else response.reason_phrase


def raise_for_status(service: str, response: HttpResponse) -> None:
    """Map a non-2xx answer: transient statuses are retryable, every other 4xx is a rejection."""
    if response.is_success:
        return
    where = f"{response.method} {response.path}"
    detail = f"{where} -> {response.status_code}: {error_detail(response)}"
    if response.status_code in TRANSIENT_STATUSES or response.status_code >= 500:
        raise UpstreamUnavailable(
            service, detail, status=response.status_code, retry_after=retry_after_seconds(response)
        )
    raise UpstreamRejected(service, detail, status=response.status_code)


class Upstream:
    """One upstream service on the shared client: sends, observes, maps errors under its own name."""

    def __init__(self, http: HttpClient, service: str, observe: Observer = no_observer) -> None:
        self.http = http
        self.service = service
        self._observe = observe

    async def request(self, method: str, url: str, **kwargs: Any) -> HttpResponse:
        return await send(self.http, self.service, method, url, self._observe, **kwargs)

    def check(self, response: HttpResponse) -> None:
        raise_for_status(self.service, response)
