"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from backfill.adapters.transport import HttpClient, make_client


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    """The project's own HTTP client, as the worker and producer build it."""
    client = make_client(5.0)
    yield client
    await client.aclose()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """A plain NATS connection to the session's server, drained afterwards."""
    client = await nats.connect(nats_url)
    yield client
    await client.drain()
