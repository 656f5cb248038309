"""Fixtures for the doubles' own tests: nats-server, the PMOVES contracts, served doubles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from backfill_doubles.jellyfin import JellyfinDouble
from backfill_doubles.natsserver import NatsServerProcess
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.serve import serve
from tests.doubles import jellyfin_setup, postgrest_setup


@pytest.fixture
def nats_server() -> Iterator[NatsServerProcess]:
    server = NatsServerProcess(jetstream=False)
    server.start()
    yield server
    server.close()


@pytest.fixture
def jellyfin() -> JellyfinDouble:
    return JellyfinDouble(jellyfin_setup.KEY, jellyfin_setup.USER, jellyfin_setup.SERVER, seed=7)


@pytest.fixture
async def jellyfin_http(jellyfin: JellyfinDouble) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve(jellyfin.app()) as url,
        httpx.AsyncClient(base_url=url, headers=jellyfin_setup.AUTH) as client,
    ):
        yield client


@pytest.fixture
def db() -> PostgrestDouble:
    return PostgrestDouble(postgrest_setup.KEY)


@pytest.fixture
async def db_http(db: PostgrestDouble) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve(db.app()) as url,
        httpx.AsyncClient(base_url=url, headers=postgrest_setup.HEADERS) as client,
    ):
        yield client
