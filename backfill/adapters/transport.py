"""The one shared HTTP client and the boundary where HTTP failures become project errors.

docs/upstreams.md §7 and `make bench`: HTTP is this workload's bottleneck. httpx's default pool collapses
past ~16 concurrent requests, and even over the aiohttp transport httpx's request and response models cost as
much CPU per request as aiohttp itself (py-spy on a worker: ~20 % of all samples in httpx). So the
workers and the producer talk to upstreams through a thin client on one `aiohttp.ClientSession`: bytes
in, bytes out, no cookie jar. Build it once per process and pass it to every adapter.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import msgspec
import yarl
from multidict import CIMultiDictProxy

from backfill.core.errors import OutcomeUnknown, UpstreamNotReady, UpstreamRejected, UpstreamUnavailable

TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
NOT_EXECUTED_STATUSES = frozenset({502, 503, 504})  # a gateway or the server said it did not get to it


def is_transient(status: int) -> bool:
    """An answer retrying may fix: a timeout, too early, rate-limited, or any 5xx."""
    return status in TRANSIENT_STATUSES or status >= 500


MAX_BODY_BYTES = 8 * 1024 * 1024  # no answer the backfill asks for comes near this
READ_ATTEMPTS = 3  # an idempotent request: the first try and two more within one delivery
READ_BACKOFF = 0.2  # seconds before the second try (doubled for the third, jittered)

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


class BodyTooLarge(Exception):
    """An answer larger than the client accepts."""


class HttpClient:
    """One pooled aiohttp session for every upstream (created on first use, inside the running loop).

    Redirects are never followed: a request carries its upstream's credentials (`apikey`, the agent
    token, Jellyfin's key), which must not reach another host; a 3xx is reported as an error naming
    where it pointed. Answers are read up to `max_body` bytes."""

    def __init__(self, timeout: float, max_connections: int = 100, max_body: int = MAX_BODY_BYTES) -> None:
        self.timeout = timeout
        self._max_body = max_body
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
            response_class=_Response,
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
        async with session.request(
            method, url, params=query, headers=headers, data=data, allow_redirects=False
        ) as response:
            body = await self._read(response)
            answer_headers: CIMultiDictProxy[str] = response.headers
            return HttpResponse(
                response.status, answer_headers, body, method, response.url.path, response.reason or ""
            )

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None:
            if declared > self._max_body:
                raise BodyTooLarge(f"answer of {declared} bytes, more than {self._max_body}")
            return await response.read()
        chunks, size = [], 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > self._max_body:
                raise BodyTooLarge(f"answer larger than {self._max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Response(aiohttp.ClientResponse):
    """A server answering a 5xx may close the connection right after without saying so (uvicorn does
    after an unhandled exception: every 500 of Agent Zero). aiohttp hands the connection back to its pool
    as soon as the body is in, before the close arrives; the next request on it then fails before it is
    even sent ("Can not write request body"), and a POST is not tried again. So a connection that
    answered a 5xx goes back closed, never to the pool (tests/integration/test_transport.py guards this
    hook into aiohttp's release of the connection)."""

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        response = await super().start(connection)
        if self.status >= 500 and protocol is not None:
            if self.connection is None:  # the whole body came with the head: already back in the pool
                protocol.close()  # closed there, the pool drops it instead of handing it out
            else:
                protocol.force_close()  # closed when released
        return response


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
        raise no_answer(service, f"{method} {_path(url)} failed: {type(exc).__name__}: {exc}", exc) from exc
    except BodyTooLarge as exc:
        observe(service, None, time.perf_counter() - started)
        raise UpstreamRejected(service, f"{method} {_path(url)}: {exc}; refused") from exc
    observe(service, response.status_code, time.perf_counter() - started)
    return response


def no_answer(service: str, detail: str, exc: BaseException) -> UpstreamUnavailable:
    """A request that got no answer: `UpstreamNotReady` when it never reached the upstream (no
    connection could be made: refused, unresolvable, timed out connecting), else `OutcomeUnknown` (it
    may have been received and acted on: a timeout, the connection lost before the answer)."""
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return UpstreamNotReady(service, detail)
    return OutcomeUnknown(service, detail)


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
    if 300 <= response.status_code < 400:
        target = yarl.URL(response.headers.get("location", ""))
        raise UpstreamRejected(
            service,
            f"{where} -> {response.status_code} redirect to {target.host or 'the same host'}{target.path};"
            f" redirects are not followed (credentials stay with their host): set {service}'s URL to"
            " the address that answers",
            status=response.status_code,
        )
    detail = f"{where} -> {response.status_code}: {error_detail(response)}"
    if is_transient(response.status_code):
        raise UpstreamUnavailable(
            service, detail, status=response.status_code, retry_after=retry_after_seconds(response)
        )
    raise UpstreamRejected(service, detail, status=response.status_code)


def retry_pause(attempt: int) -> float:
    """Seconds to wait before try `attempt + 1` within one delivery: READ_BACKOFF doubled per try,
    jittered to 50-100 % so that the workers a fault hit together do not come back together."""
    return float(READ_BACKOFF * 2 ** (attempt - 1) * (0.5 + 0.5 * random.random()))  # noqa: S311 - jitter


async def _pause(attempt: int, retry_after: float | None, deadline: float) -> bool:
    """Sleep before the next try; False (no sleep) when the wait would not fit before `deadline`."""
    delay = retry_pause(attempt)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if time.monotonic() + delay >= deadline:
        return False
    await asyncio.sleep(delay)
    return True


class Upstream:
    """One upstream service on the shared client: sends, observes, maps errors under its own name."""

    def __init__(self, http: HttpClient, service: str, observe: Observer = no_observer) -> None:
        self.http = http
        self.service = service
        self._observe = observe

    async def request(self, method: str, url: str, **kwargs: Any) -> HttpResponse:
        return await send(self.http, self.service, method, url, self._observe, **kwargs)

    async def read(self, method: str, url: str, **kwargs: Any) -> HttpResponse:
        """An idempotent request (GET, HEAD): a transient failure (no answer, 5xx, 429) is tried again
        up to READ_ATTEMPTS times, with a short jittered backoff or the upstream's Retry-After, while
        that fits in one request timeout; a transient fault then costs a request, not a delivery. What
        still fails is returned (a status) or raised, as by `request`."""
        return await self.retrying(method, url, is_transient, UpstreamUnavailable, **kwargs)

    async def write(self, method: str, url: str, **kwargs: Any) -> HttpResponse:
        """An idempotent write (a merge that gives the same row however often it runs): tried again,
        as a read is, when no answer came or when the answer says it was not executed (502, 503 such
        as PostgREST's PGRST002 "could not query the database for the schema cache", 504)."""
        return await self.retrying(
            method, url, NOT_EXECUTED_STATUSES.__contains__, UpstreamUnavailable, **kwargs
        )

    async def retrying(
        self,
        method: str,
        url: str,
        again: Callable[[int], bool],
        unanswered: type[UpstreamUnavailable] | tuple[type[UpstreamUnavailable], ...],
        **kwargs: Any,
    ) -> HttpResponse:
        """`request`, tried again (READ_ATTEMPTS in all, jittered backoff or Retry-After, within one
        request timeout) after an answer whose status `again` accepts or a failure of the `unanswered`
        kinds. What still fails is returned (a status) or raised."""
        deadline, attempt = time.monotonic() + self.http.timeout, 1
        while True:
            try:
                response = await self.request(method, url, **kwargs)
            except unanswered:
                if attempt == READ_ATTEMPTS or not await _pause(attempt, None, deadline):
                    raise
            else:
                if (
                    not again(response.status_code)
                    or attempt == READ_ATTEMPTS
                    or not await _pause(attempt, retry_after_seconds(response), deadline)
                ):
                    return response
            attempt += 1

    def check(self, response: HttpResponse) -> None:
        raise_for_status(self.service, response)
