"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backfill.transport import HttpClient, make_client


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    """The project's own HTTP client, as the worker and producer build it."""
    client = make_client(5.0)
    yield client
    await client.aclose()
