"""The one shared HTTP client and the boundary where HTTP failures become project errors.

FACTS §7: httpx's default pool collapses past ~16 concurrent requests, so the client runs over the
aiohttp transport; build it once per process (creating one costs ~30 ms) and pass it to every adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from backfill.errors import UpstreamRejected, UpstreamUnavailable

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

# Called after every request with (service, HTTP status or None when no answer came, seconds).
Observer = Callable[[str, int | None, float], None]


def no_observer(_service: str, _status: int | None, _seconds: float) -> None:
    return None


def make_client(
    timeout: float, max_connections: int = 100, *, default_transport: bool = False
) -> httpx.AsyncClient:
    """One pooled client for all upstreams; `default_transport` exists for benchmarks comparing pools."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    if default_transport:
        return httpx.AsyncClient(timeout=timeout, limits=limits)
    return httpx.AsyncClient(timeout=timeout, limits=limits, transport=AiohttpTransport(limits=limits))


def retry_after_seconds(response: httpx.Response) -> float | None:
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
    client: httpx.AsyncClient,
    service: str,
    method: str,
    url: str,
    observe: Observer = no_observer,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request; a transport failure raises UpstreamUnavailable naming the service."""
    started = time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except (httpx.HTTPError, aiohttp.ClientError, TimeoutError) as exc:
        observe(service, None, time.perf_counter() - started)
        raise UpstreamUnavailable(
            service, f"{method} {_path(url)} failed: {type(exc).__name__}: {exc}"
        ) from exc
    observe(service, response.status_code, time.perf_counter() - started)
    return response


def _path(url: str) -> str:
    """The path alone, for error messages: never a query string that might carry a key."""
    return httpx.URL(url).path


def error_detail(response: httpx.Response, limit: int = 300) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:limit] if text else response.reason_phrase


def raise_for_status(service: str, response: httpx.Response) -> None:
    """Map a non-2xx answer: transient statuses are retryable, every other 4xx is a rejection."""
    if response.is_success:
        return
    where = f"{response.request.method} {response.request.url.path}"
    detail = f"{where} -> {response.status_code}: {error_detail(response)}"
    if response.status_code in TRANSIENT_STATUSES or response.status_code >= 500:
        raise UpstreamUnavailable(
            service, detail, status=response.status_code, retry_after=retry_after_seconds(response)
        )
    raise UpstreamRejected(service, detail, status=response.status_code)


class Upstream:
    """One upstream service on the shared client: sends, observes, maps errors under its own name."""

    def __init__(self, http: httpx.AsyncClient, service: str, observe: Observer = no_observer) -> None:
        self.http = http
        self.service = service
        self._observe = observe

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await send(self.http, self.service, method, url, self._observe, **kwargs)

    def check(self, response: httpx.Response) -> None:
        raise_for_status(self.service, response)
