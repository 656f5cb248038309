"""What only the direct PostgreSQL backend has: a pool, SQL states, identifiers, a DSN with a password."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from backfill.errors import ConfigError, UpstreamRejected, UpstreamUnavailable
from backfill.pgcatalog import PostgresCatalog, catalog_error
from backfill_doubles.natsserver import free_port
from backfill_doubles.postgres import execute, insert_rows
from tests.contract.conftest import PostgresBackend

CLIENTS = (
    "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()"
)


@pytest.fixture
async def dsn(postgres_dsn: str) -> str:
    await execute(postgres_dsn, "truncate public.studio_board restart identity")
    return postgres_dsn


@pytest.fixture
async def reader(dsn: str) -> AsyncIterator[str]:
    """A login role with no grant on studio_board; yields its DSN."""
    await execute(dsn, "create role backfill_reader login")
    try:
        yield dsn.replace("postgresql://postgres@", "postgresql://backfill_reader@")
    finally:
        await execute(dsn, "drop role backfill_reader")


@pytest.mark.parametrize(
    "table", ["studio_board; drop table studio_board", 'studio"board', "public.studio_board", "", "1abc"]
)
async def test_a_table_name_that_is_not_a_plain_identifier_is_refused_before_connecting(table: str) -> None:
    """No SQL is ever built from a name that would need more than quoting (nothing listens there)."""
    with pytest.raises(ConfigError):
        await PostgresCatalog.open(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", table=table)


async def test_a_connection_error_never_shows_the_password() -> None:
    """The DSN's password stays out of the error message."""
    with pytest.raises(UpstreamUnavailable) as failure:
        await PostgresCatalog.open(f"postgresql://backfill:s3cr3t-pw@127.0.0.1:{free_port()}/postgres")
    assert "s3cr3t-pw" not in str(failure.value)


async def test_permission_denied_is_rejected_not_retried(reader: str) -> None:
    """A role without rights on the table: 42501, which retrying cannot fix."""
    catalog = await PostgresCatalog.open(reader)
    try:
        with pytest.raises(UpstreamRejected, match="42501"):
            await catalog.get_row(1)
    finally:
        await catalog.aclose()


async def test_a_query_slower_than_command_timeout_is_retryable_and_observed_without_status(dsn: str) -> None:
    """A table locked by someone else: the query times out client-side; observed as ("catalog", None)."""
    seen: list[int | None] = []
    catalog = await PostgresCatalog.open(
        dsn, command_timeout=0.2, observe=lambda _service, status, _seconds: seen.append(status)
    )
    admin = await asyncpg.connect(dsn)
    try:
        async with admin.transaction():
            await admin.execute("lock table public.studio_board in access exclusive mode")
            with pytest.raises(UpstreamUnavailable):
                await catalog.count_candidates()
        assert await catalog.count_candidates() == 0
        assert seen == [None, 200]
    finally:
        await admin.close()
        await catalog.aclose()


async def test_the_pool_reconnects_after_the_server_terminated_every_connection(dsn: str) -> None:
    """After an administrator kills our connections, the failed call is retryable and later calls work."""
    await insert_rows(dsn, [{"status": "published"}])
    backend = PostgresBackend(dsn)
    catalog = await backend.catalog()
    try:
        with pytest.raises(UpstreamUnavailable, match=r"08|57P01"):
            await backend.interrupted(catalog.count_candidates)
        assert [await catalog.count_candidates() for _ in range(3)] == [1, 1, 1]
    finally:
        await backend.close()


async def test_aclose_releases_every_pooled_connection(dsn: str) -> None:
    """After aclose no connection of ours is left on the server (the demo's Ctrl-C relies on it)."""
    admin = await asyncpg.connect(dsn)
    try:
        catalog = await PostgresCatalog.open(dsn, pool_size=4)
        await asyncio.gather(*(catalog.get_row(1) for _ in range(8)))
        assert await admin.fetchval(CLIENTS) >= 1
        await catalog.aclose()
        deadline = time.monotonic() + 10
        while await admin.fetchval(CLIENTS) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert await admin.fetchval(CLIENTS) == 0
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (asyncpg.exceptions.SerializationError("could not serialize access"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), True),
        (asyncpg.exceptions.TooManyConnectionsError("too many clients"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), True),
        (asyncpg.exceptions.InterfaceError("connection is closed"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'), False),
        (asyncpg.exceptions.UndefinedColumnError('column "x" does not exist'), False),
        (asyncpg.exceptions.InsufficientPrivilegeError("permission denied"), False),
        (asyncpg.exceptions.InvalidPasswordError("password authentication failed"), False),
        (asyncpg.exceptions.InvalidCatalogNameError('database "x" does not exist'), False),
        (asyncpg.exceptions.ClientConfigurationError("invalid DSN"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_driver_errors_are_classified_by_whether_a_retry_can_help(
    error: BaseException, retryable: bool
) -> None:
    """Connection, rollback, resource and operator-intervention states retry; the rest is rejected."""
    mapped = catalog_error(error)
    assert isinstance(mapped, UpstreamUnavailable if retryable else UpstreamRejected)
    assert mapped.service == "catalog"
    assert mapped.retryable is retryable
