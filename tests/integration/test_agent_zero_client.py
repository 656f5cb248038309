"""AgentZeroClient reads Agent Zero's answers as its code gives them (docs/upstreams.md §1): what was
surely not published, what may have been, what it rejects; its health; the connection it closes after a
500. Real HTTP over loopback: the Agent Zero double, and fixed answers for the rarer states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from backfill.adapters.agent_zero import AgentZeroClient
from backfill.adapters.transport import HttpClient
from backfill.core.errors import OutcomeUnknown, UpstreamNotReady, UpstreamRejected, UpstreamUnavailable
from backfill_doubles.agent_zero import AgentZeroDouble
from backfill_doubles.natsserver import free_port
from backfill_doubles.serve import serve

PAYLOAD = {"artifact_uri": "s3://outputs/a/b.mp4", "published_path": "a/b.mp4", "title": "Demo"}


def fixed(status: int, health: dict[str, Any] | None, body: str = "Internal Server Error") -> web.Application:
    """An Agent Zero frozen in one state: every publish gets `status`; `/healthz` answers `health`
    (404 when None)."""

    async def publish(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=body)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response(health) if health is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_post("/events/publish", publish)
    app.router.add_get("/healthz", healthz)
    return app


def nats_health(connected: bool) -> dict[str, Any]:
    return {"status": "ok", "nats": {"connected": connected, "controller_started": True}}


@pytest.mark.parametrize(
    ("health", "raised"),
    [
        pytest.param(nats_health(True), UpstreamRejected, id="nats-up-rejected"),
        pytest.param(nats_health(False), UpstreamUnavailable, id="nats-down-failed-publish"),
        pytest.param(None, UpstreamUnavailable, id="no-health-retried"),
    ],
)
async def test_a_500_is_a_rejection_only_while_its_nats_link_is_up(
    http: HttpClient, health: dict[str, Any] | None, raised: type[Exception]
) -> None:
    """Every 500 of Agent Zero says only "Internal Server Error": with NATS connected it is its own
    schema check (permanent), else a publish that failed on its link (retried)."""
    async with serve(fixed(500, health)) as url:
        with pytest.raises(raised) as caught:
            await AgentZeroClient(http, url).publish(PAYLOAD, "cid")
    assert type(caught.value) is raised
    assert "500" in str(caught.value)


@pytest.mark.parametrize("status", [502, 504])
async def test_a_gateway_error_leaves_the_outcome_unknown(http: HttpClient, status: int) -> None:
    """A proxy's 502/504 may hide a publish that went through: the envelope must decide."""
    async with serve(fixed(status, nats_health(True), body="bad gateway")) as url:
        with pytest.raises(OutcomeUnknown):
            await AgentZeroClient(http, url).publish(PAYLOAD, "cid")


async def test_not_ready_on_every_try_is_not_ready_and_healthz_tells_why(http: HttpClient) -> None:
    """503 "NATS controller not ready" on each try within the request: UpstreamNotReady (nothing was
    published); its health says NATS is down."""
    async with serve(fixed(503, nats_health(False), body='{"detail": "NATS controller not ready"}')) as url:
        client = AgentZeroClient(http, url)
        with pytest.raises(UpstreamNotReady) as caught:
            await client.publish(PAYLOAD, "cid")
        assert "NATS controller not ready" in str(caught.value)
        assert await client.nats_ready() is False


async def test_nobody_listening_is_not_ready_and_not_ready_to_publish(http: HttpClient) -> None:
    """A refused connection: nothing reached Agent Zero (safe to repeat); its health: down."""
    client = AgentZeroClient(http, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpstreamNotReady):
        await client.publish(PAYLOAD, "cid")
    assert await client.nats_ready() is False


async def test_a_health_that_does_not_say_is_unknown(http: HttpClient) -> None:
    """No /healthz (or one without `nats`): the circuit cannot tell from it."""
    async with serve(fixed(200, {"status": "ok"})) as url:
        assert await AgentZeroClient(http, url).nats_ready() is None
    async with serve(fixed(200, None)) as url:
        assert await AgentZeroClient(http, url).nats_ready() is None


async def test_the_double_reports_its_nats_link_ready(
    http: HttpClient, nats_url: str, contracts_dir: Path
) -> None:
    agent = AgentZeroDouble(nats_url, contracts_dir)
    async with serve(agent.app()) as url:
        assert await AgentZeroClient(http, url).nats_ready() is True


async def test_the_connection_agent_zero_closes_after_a_500_costs_the_next_publish_nothing(
    http: HttpClient, nats_url: str, contracts_dir: Path
) -> None:
    """uvicorn closes the keep-alive connection after an unhandled exception without saying so: a
    client reusing it fails the next POST before sending it. The client never reuses it."""
    agent = AgentZeroDouble(nats_url, contracts_dir)
    async with serve(agent.app()) as url:
        client = AgentZeroClient(http, url)
        assert await client.publish(PAYLOAD, "first")
        with pytest.raises(UpstreamRejected):
            await client.publish({**PAYLOAD, "artifact_uri": "https://cdn.example/a.mp4"}, "invalid")
        for n in range(3):
            assert await client.publish(PAYLOAD, f"after-{n}")
    assert len(agent.envelopes) == 4
