"""AgentZeroDouble publishes like Agent Zero does: envelopes on core NATS, schema-checked (docs/upstreams.md §1)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from jsonschema import Draft202012Validator
from nats.aio.client import Client as NatsClient

from backfill_doubles.agent_zero import AgentZeroDouble
from backfill_doubles.linkcut import LinkCut
from backfill_doubles.natsserver import NatsServerProcess, free_port
from backfill_doubles.serve import BackgroundServer, serve
from tests.support.agentzero import AgentZeroProcess

TOPIC = "content.published.v1"
PAYLOAD = {
    "artifact_uri": "s3://outputs/a/b.mp4",
    "published_path": "a/b.mp4",
    "title": "Demo",
    "tags": ["demo", "backfill"],
    "duration": 12.5,
}


@pytest.fixture
def agent(nats_server: NatsServerProcess, contracts_dir: Path) -> AgentZeroDouble:
    return AgentZeroDouble(nats_server.url, contracts_dir)


@pytest.fixture
async def http(agent: AgentZeroDouble) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(agent.app()) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


@pytest.fixture
async def listener(nats_server: NatsServerProcess) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def publish(
    http: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    body = {"topic": TOPIC, "payload": PAYLOAD, "source": "backfill", **body}
    return await http.post("/events/publish", json=body, headers=headers)


async def next_envelope(sub: Any) -> dict[str, Any]:
    message = await sub.next_msg(timeout=10)  # a deadline, not a wait: it returns once the envelope is in
    envelope: dict[str, Any] = json.loads(message.data)
    return envelope


async def test_publish_puts_a_valid_envelope_on_core_nats(
    http: httpx.AsyncClient, listener: NatsClient, contracts_dir: Path
) -> None:
    """A valid publish reaches a core NATS subscriber on subject = topic, wrapped in a valid envelope."""
    sub = await listener.subscribe(TOPIC)
    await listener.flush()  # the server has the subscription before anything is published
    response = await publish(http, correlation_id="row-42", parent_id="parent-1")
    assert response.status_code == 200
    envelope = await next_envelope(sub)
    assert response.json() == {"published": TOPIC, "id": envelope["id"]}
    schema = json.loads((contracts_dir / "envelope.schema.json").read_text())
    assert list(Draft202012Validator(schema).iter_errors(envelope)) == []
    assert envelope["payload"] == PAYLOAD
    assert envelope["source"] == "backfill"
    assert envelope["version"] == "v1"
    assert envelope["ts"].endswith("Z")
    assert (envelope["correlation_id"], envelope["parent_id"]) == ("row-42", "parent-1")


async def test_absent_optionals_are_left_out_of_the_envelope(
    agent: AgentZeroDouble, http: httpx.AsyncClient
) -> None:
    """Without correlation_id / parent_id / source the envelope omits them and source is agent-zero."""
    response = await http.post("/events/publish", json={"topic": TOPIC, "payload": PAYLOAD})
    assert response.status_code == 200
    envelope = agent.envelopes[-1]
    assert set(envelope) == {"id", "topic", "ts", "version", "source", "payload"}
    assert envelope["source"] == "agent-zero"


async def test_invalid_payload_is_500_and_nothing_is_published(
    agent: AgentZeroDouble, http: httpx.AsyncClient, listener: NatsClient
) -> None:
    """A payload breaking the schema (artifact_uri not s3://) is an unhandled 500 and is not published."""
    sub = await listener.subscribe(TOPIC)
    await listener.flush()  # the server has the subscription before anything is published
    bad = {**PAYLOAD, "artifact_uri": "https://cdn.example/a.mp4"}
    response = await http.post("/events/publish", json={"topic": TOPIC, "payload": bad})
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    await listener.publish(TOPIC, b'{"sentinel": true}')
    assert await next_envelope(sub) == {"sentinel": True}
    assert agent.envelopes == []
    assert agent.rejected[-1]["status"] == 500


async def test_without_contracts_the_payload_is_not_checked(nats_server: NatsServerProcess) -> None:
    """contracts_dir=None skips schema validation."""
    agent = AgentZeroDouble(nats_server.url, None)
    async with serve(agent.app()) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/events/publish", json={"topic": TOPIC, "payload": {"anything": 1}})
    assert response.status_code == 200


async def test_no_token_is_checked_whatever_the_header_says(http: httpx.AsyncClient) -> None:
    """Agent Zero reads no token (PMOVES.AI 09f0ad73): with or without x-agent-token, published."""
    missing = await publish(http)
    wrong = await publish(http, headers={"x-agent-token": "nope"})
    assert (missing.status_code, wrong.status_code) == (200, 200)


async def test_the_connection_is_closed_after_a_500(agent: AgentZeroDouble, http: httpx.AsyncClient) -> None:
    """As uvicorn does after an unhandled exception: the 500 arrives, then the server closes the
    connection, with no `Connection: close` header to warn the client."""
    response = await http.post("/events/publish", json={"topic": TOPIC, "payload": {"artifact_uri": "x"}})
    assert response.status_code == 500
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert "connection" not in response.headers
    reader, writer = await asyncio.open_connection(*http.base_url.netloc.decode().split(":"))
    body = json.dumps({"topic": TOPIC, "payload": {"artifact_uri": "x"}}).encode()
    writer.write(
        b"POST /events/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = await asyncio.wait_for(reader.read(), 5)  # read() returns only once the server closed
    assert answer.startswith(b"HTTP/1.1 500") and answer.endswith(b"Internal Server Error")
    writer.close()


async def test_publish_then_drop_sends_the_envelope_and_no_answer(
    agent: AgentZeroDouble, http: httpx.AsyncClient, listener: NatsClient
) -> None:
    """The crash after publishing: the envelope reaches NATS, the client's connection is lost."""
    sub = await listener.subscribe(TOPIC)
    await listener.flush()
    agent.drop_after_publish = 1
    with pytest.raises(httpx.TransportError):
        await publish(http, correlation_id="row-1")
    assert (await next_envelope(sub))["correlation_id"] == "row-1"
    assert (await publish(http)).status_code == 200  # only the next one


async def test_answer_then_lose_answers_200_and_never_publishes(
    agent: AgentZeroDouble, http: httpx.AsyncClient, listener: NatsClient
) -> None:
    """The crash between the answer and the unflushed envelope: 200 with an id nobody ever sees."""
    sub = await listener.subscribe(TOPIC)
    await listener.flush()
    agent.skip_publish_after_answer = 1
    lost = await publish(http, correlation_id="lost")
    sent = await publish(http, correlation_id="sent")
    assert lost.status_code == sent.status_code == 200
    envelope = await next_envelope(sub)
    assert (envelope["correlation_id"], envelope["id"]) == ("sent", sent.json()["id"])
    assert agent.answered == [lost.json()["id"], sent.json()["id"]]


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"not json", "json_invalid"),
        (json.dumps({"payload": PAYLOAD}).encode(), "missing"),
        (json.dumps({"topic": TOPIC, "payload": [1, 2]}).encode(), "dict_type"),
    ],
    ids=["not-json", "no-topic", "payload-not-object"],
)
async def test_malformed_body_is_422_like_fastapi(http: httpx.AsyncClient, content: bytes, kind: str) -> None:
    """A body that is not JSON, lacks topic, or has a non-object payload is 422 with FastAPI details."""
    response = await http.post(
        "/events/publish", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert [error["type"] for error in response.json()["detail"]] == [kind]


async def test_no_nats_configured_is_503(contracts_dir: Path) -> None:
    """Without a NATS link the publish is 503 "NATS controller not ready" (transient)."""
    agent = AgentZeroDouble(None, contracts_dir)
    async with serve(agent.app()) as url, httpx.AsyncClient(base_url=url) as client:
        response = await publish(client)
        health = (await client.get("/healthz")).json()
    assert response.status_code == 503
    assert response.json() == {"detail": "NATS controller not ready"}
    assert health["nats"]["connected"] is False
    assert health["nats"]["controller_started"] is False


async def test_unreachable_nats_is_503_and_startup_does_not_block(contracts_dir: Path) -> None:
    """A NATS URL nobody listens on: the app starts at once and answers 503."""
    agent = AgentZeroDouble(f"nats://127.0.0.1:{free_port()}", contracts_dir)
    started = time.monotonic()
    async with serve(agent.app()) as url, httpx.AsyncClient(base_url=url) as client:
        assert time.monotonic() - started < 1.0
        assert (await publish(client)).status_code == 503


async def wait_until_disconnected(http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 5
    while (await http.get("/healthz")).json()["nats"]["connected"]:
        assert time.monotonic() < deadline, "agent never noticed NATS going away"
        await asyncio.sleep(0.02)


async def test_nats_going_away_makes_publish_503(
    nats_server: NatsServerProcess, http: httpx.AsyncClient
) -> None:
    """When the NATS server stops, healthz reports it and publishes answer 503."""
    health = (await http.get("/healthz")).json()
    assert health == {
        "status": "ok",
        "nats": {"url": nats_server.url, "connected": True, "controller_started": True},
    }
    nats_server.stop()
    await wait_until_disconnected(http)
    response = await publish(http)
    assert response.status_code == 503


async def test_fail_next_answers_503_then_recovers(agent: AgentZeroDouble, http: httpx.AsyncClient) -> None:
    """fail_next=N makes the next N publishes 503 NATS controller not ready; none are published."""
    agent.fail_next = 2
    statuses = [(await publish(http)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert len(agent.envelopes) == 1
    assert agent.injected["fail"] == 2


async def test_fail_rate_is_deterministic_for_a_seed(
    nats_server: NatsServerProcess, contracts_dir: Path
) -> None:
    """The same seed fails the same publishes."""
    runs = []
    for _ in range(2):
        agent = AgentZeroDouble(nats_server.url, contracts_dir, seed=5)
        agent.fail_rate = 0.5
        async with serve(agent.app()) as url, httpx.AsyncClient(base_url=url) as client:
            runs.append([(await publish(client)).status_code for _ in range(10)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


def test_runs_in_a_background_server_and_closes_nats_on_stop(
    nats_server: NatsServerProcess, contracts_dir: Path
) -> None:
    """In a BackgroundServer the double connects from the server thread and disconnects on stop()."""
    agent = AgentZeroDouble(nats_server.url, contracts_dir)
    with BackgroundServer(agent.app()) as server:
        response = httpx.post(server.url + "/events/publish", json={"topic": TOPIC, "payload": PAYLOAD})
        assert server.call(lambda: agent.nats_connected) is True
    assert response.status_code == 200
    assert agent.nats_connected is False


async def test_after_its_reconnect_budget_it_answers_503_for_good_until_restarted(
    nats_server: NatsServerProcess, contracts_dir: Path
) -> None:
    """Its NATS link cut longer than its reconnects last: its client closes for good; the link back,
    it still answers 503 and /healthz says disconnected, until the controller starts again."""
    port = int(nats_server.url.rsplit(":", 1)[1])
    async with LinkCut(port) as link:
        agent = AgentZeroDouble(link.url, contracts_dir, reconnect_attempts=2, reconnect_wait=0.1)
        async with serve(agent.app()) as url, httpx.AsyncClient(base_url=url) as client:
            assert (await publish(client)).status_code == 200
            await link.cut()
            deadline = time.monotonic() + 10
            while not agent.gave_up:
                assert time.monotonic() < deadline, "it never gave up"
                await asyncio.sleep(0.02)
            await link.restore()
            assert (await publish(client)).json() == {"detail": "NATS controller not ready"}
            health = (await client.get("/healthz")).json()["nats"]
            assert (health["connected"], health["controller_started"]) == (False, True)
            await agent.close()  # the restart
            await agent.start()
            assert (await publish(client)).status_code == 200


@pytest.mark.parametrize("moment", ["publish", "answer"])
async def test_the_process_kills_itself_in_each_crash_window(
    nats_server: NatsServerProcess, moment: str
) -> None:
    """Run as a process: on the chosen accepted publish it dies by SIGKILL right after publishing (the
    envelope is out, no answer) or right after answering (the 200 is out, no envelope)."""
    listener = await nats.connect(nats_server.url)
    sub = await listener.subscribe(TOPIC)
    await listener.flush()
    agent = AgentZeroProcess(nats_server.url)
    await agent.start(f"--die-after-{moment}", "2")
    try:
        async with httpx.AsyncClient(base_url=agent.url) as client:
            first = await publish(client, correlation_id="first")
            assert first.status_code == 200 and (await next_envelope(sub))["id"] == first.json()["id"]
            if moment == "publish":
                with pytest.raises(httpx.TransportError):
                    await publish(client, correlation_id="second")
                assert (await next_envelope(sub))["correlation_id"] == "second"
            else:
                assert (await publish(client, correlation_id="second")).status_code == 200
                with pytest.raises(nats.errors.TimeoutError):
                    await sub.next_msg(timeout=0.5)  # the envelope died with the process
        assert await agent.exited() == -signal.SIGKILL
    finally:
        await agent.stop()
        await listener.close()


async def test_sigterm_does_not_stop_it(nats_server: NatsServerProcess) -> None:
    """Its startup hook re-registers SIGTERM for its runtime: the service goes on answering."""
    agent = AgentZeroProcess(nats_server.url)
    await agent.start()
    try:
        agent.signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=agent.url) as client:
            assert (await client.get("/healthz")).status_code == 200
        assert agent.proc is not None and agent.proc.returncode is None
    finally:
        await agent.stop()
