"""The HTTP boundary over real loopback servers: no redirect is followed (credentials stay with their
host), answers are capped, and an idempotent read survives a transient fault within one delivery."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from backfill.adapters.transport import HttpClient, Upstream, make_client
from backfill.core.errors import UpstreamRejected, UpstreamUnavailable
from backfill_doubles.serve import serve


class Script:
    """A server that answers each request with the next status in `statuses` (then 200) and records
    what reached it."""

    def __init__(self, *statuses: int, headers: dict[str, str] | None = None, body: bytes = b"{}") -> None:
        self.statuses = list(statuses)
        self.headers = headers or {}
        self.body = body
        self.seen: list[tuple[str, dict[str, str]]] = []

    def app(self) -> web.Application:
        async def answer(request: web.Request) -> web.StreamResponse:
            self.seen.append((request.method, dict(request.headers)))
            status = self.statuses.pop(0) if self.statuses else 200
            return web.Response(status=status, body=self.body if status == 200 else b"", headers=self.headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        return app


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = make_client(2.0)
    yield http
    await http.aclose()


async def test_a_redirect_is_refused_and_the_credentials_never_leave_their_host(client: HttpClient) -> None:
    elsewhere = Script()
    async with serve(elsewhere.app()) as other_url:
        redirecting = Script(302, headers={"Location": f"{other_url}/steal?x=1"})
        async with serve(redirecting.app()) as url:
            upstream = Upstream(client, "catalog")
            response = await upstream.read("GET", f"{url}/studio_board", headers={"apikey": "service-role"})
            with pytest.raises(UpstreamRejected, match=r"302 redirect to 127\.0\.0\.1/steal") as caught:
                upstream.check(response)
    assert not caught.value.retryable
    assert len(redirecting.seen) == 1  # refused at once, not retried
    assert elsewhere.seen == []  # the apikey never reached the other host


async def test_an_answer_larger_than_the_cap_is_refused(client: HttpClient) -> None:
    big = Script(body=b"x" * (8 * 1024 * 1024 + 1))
    async with serve(big.app()) as url:
        with pytest.raises(UpstreamRejected, match="more than 8388608"):
            await Upstream(client, "jellyfin").read("GET", f"{url}/Items")


async def test_an_answer_without_a_length_is_capped_while_it_streams() -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(20):
            await response.write(b"y" * 65536)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/x", endless)
    http = HttpClient(2.0, max_body=100_000)
    try:
        async with serve(app) as url:
            with pytest.raises(UpstreamRejected, match="larger than 100000"):
                await Upstream(http, "storage").read("GET", f"{url}/x")
    finally:
        await http.aclose()


async def test_a_transient_fault_costs_a_request_not_the_read(client: HttpClient) -> None:
    flaky = Script(503, 500)
    async with serve(flaky.app()) as url:
        response = await Upstream(client, "jellyfin").read("GET", f"{url}/Items")
    assert response.status_code == 200
    assert len(flaky.seen) == 3


async def test_a_fault_that_persists_is_returned_after_three_tries(client: HttpClient) -> None:
    down = Script(503, 503, 503, 503)
    async with serve(down.app()) as url:
        upstream = Upstream(client, "catalog")
        response = await upstream.read("GET", f"{url}/studio_board")
        with pytest.raises(UpstreamUnavailable):
            upstream.check(response)
    assert len(down.seen) == 3


async def test_a_retry_after_beyond_the_request_budget_is_left_to_the_message_retry(
    client: HttpClient,
) -> None:
    limited = Script(429, headers={"Retry-After": "30"})
    async with serve(limited.app()) as url:
        started = time.monotonic()
        response = await Upstream(client, "jellyfin").read("GET", f"{url}/Items")
    assert response.status_code == 429 and len(limited.seen) == 1
    assert time.monotonic() - started < 1.0


async def test_a_retry_after_within_the_budget_is_honoured(client: HttpClient) -> None:
    limited = Script(429, headers={"Retry-After": "0.3"})
    async with serve(limited.app()) as url:
        started = time.monotonic()
        response = await Upstream(client, "jellyfin").read("GET", f"{url}/Items")
    assert response.status_code == 200 and len(limited.seen) == 2
    assert time.monotonic() - started >= 0.3


async def test_writes_are_never_retried_by_the_transport(client: HttpClient) -> None:
    down = Script(503)
    async with serve(down.app()) as url:
        response = await Upstream(client, "agent_zero").request("POST", f"{url}/events/publish", json={})
    assert response.status_code == 503 and len(down.seen) == 1


async def test_no_answer_at_all_is_tried_again_then_raised(client: HttpClient) -> None:
    from backfill_doubles.natsserver import free_port

    with pytest.raises(UpstreamUnavailable, match="GET /Items failed"):
        await Upstream(client, "jellyfin").read("GET", f"http://127.0.0.1:{free_port()}/Items")


async def test_a_connection_closed_after_a_5xx_is_never_reused(client: HttpClient) -> None:
    """uvicorn answers an unhandled exception with a 500 and then closes the keep-alive connection,
    without a `Connection: close` header (Agent Zero does so for every 500). aiohttp pools the
    connection before the close arrives; reused, the next POST would fail unsent. It is not reused."""

    async def crash_then_close(request: web.Request) -> web.StreamResponse:
        if request.path == "/crash":
            response = web.Response(status=500, text="Internal Server Error")
            await response.prepare(request)
            await response.write_eof()
            assert request.transport is not None
            request.transport.close()
            return response
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", crash_then_close)
    async with serve(app) as url:
        up = Upstream(client, "agent_zero")
        assert (await up.request("POST", f"{url}/ok", json={})).status_code == 200
        assert (await up.request("POST", f"{url}/crash", json={})).status_code == 500
        statuses = [(await up.request("POST", f"{url}/ok", json={})).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


async def test_an_idempotent_write_is_tried_again_on_a_gateway_or_not_ready_answer(
    client: HttpClient,
) -> None:
    """A merge (same row however often it runs): 503 (PGRST002), 502 and 504 say it did not run; it is
    sent again within one request timeout. A 500 or a 4xx is returned as it came."""
    flaky = Script(503, 504)
    async with serve(flaky.app()) as url:
        response = await Upstream(client, "catalog").write("POST", f"{url}/rpc/merge", json={})
    assert response.status_code == 200 and len(flaky.seen) == 3  # READ_ATTEMPTS: the third one passed
    gateway = Script(502)
    async with serve(gateway.app()) as url:
        response = await Upstream(client, "catalog").write("POST", f"{url}/rpc/merge", json={})
    assert response.status_code == 200 and len(gateway.seen) == 2
    for final in (500, 409):
        once = Script(final)
        async with serve(once.app()) as url:
            response = await Upstream(client, "catalog").write("POST", f"{url}/rpc/merge", json={})
        assert response.status_code == final and len(once.seen) == 1


async def test_a_refused_connection_is_not_ready_and_a_lost_answer_is_unknown(client: HttpClient) -> None:
    """Nothing reached the upstream (refused): `UpstreamNotReady`, safe to repeat. The connection lost
    after the request went out: `OutcomeUnknown`, the request may have been acted on."""
    from backfill.core.errors import OutcomeUnknown, UpstreamNotReady
    from backfill_doubles.natsserver import free_port

    with pytest.raises(UpstreamNotReady):
        await Upstream(client, "agent_zero").request("POST", f"http://127.0.0.1:{free_port()}/x", json={})

    async def vanish(request: web.Request) -> web.StreamResponse:
        await request.read()
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    app = web.Application()
    app.router.add_post("/x", vanish)
    async with serve(app) as url:
        with pytest.raises(OutcomeUnknown):
            await Upstream(client, "agent_zero").request("POST", f"{url}/x", json={})
