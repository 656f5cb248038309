"""What only the direct PostgreSQL backend has: a pool, SQL states, identifiers, a DSN with a password."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from backfill.adapters.pgcatalog import PostgresCatalog, behind_transaction_pooler
from backfill.adapters.pgerrors import catalog_error, worth_another_try
from backfill.adapters.transport import make_client
from backfill.core.errors import ConfigError, UpstreamRejected, UpstreamUnavailable
from backfill.core.payload import MetaPatch
from backfill.settings import CatalogSettings, load_settings
from backfill.wiring import open_catalog
from backfill_doubles.natsserver import free_port
from backfill_doubles.postgres import execute, insert_rows
from tests.contract.conftest import PostgresBackend

CLIENTS = "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()"


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
    """An administrator kills our connection mid-query: the query is tried again on a fresh connection
    within the call; killed on every try, the call fails retryable; later calls work."""
    await insert_rows(dsn, [{"status": "published"}])
    backend = PostgresBackend(dsn)
    catalog = await backend.catalog()
    try:
        assert await backend.interrupted_once(catalog.count_candidates) == 1
        with pytest.raises(UpstreamUnavailable, match=r"08|57P01"):
            await backend.interrupted(catalog.count_candidates)
        assert [await catalog.count_candidates() for _ in range(3)] == [1, 1, 1]
    finally:
        await backend.close()


@pytest.mark.parametrize(
    ("error", "again"),
    [
        (asyncpg.exceptions.SerializationError("could not serialize access"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"), True),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), True),
        (asyncpg.exceptions.TooManyConnectionsError("too many clients"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"), False),
        (TimeoutError(), False),
        (
            asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress"),
            False,
        ),
        (asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_only_errors_a_moment_can_outlive_are_tried_again_within_the_call(
    error: BaseException, again: bool
) -> None:
    """Lost connections, serialization failures, deadlocks, too many clients, a server shutting down:
    tried again at once (every statement is safe to repeat). A timeout already took its time."""
    assert worth_another_try(error) is again


async def test_aclose_releases_every_pooled_connection(dsn: str) -> None:
    """After aclose no connection of ours is left on the server (the demo's Ctrl-C relies on it).
    Connections that were there before (a session pooler's server connections) are not ours."""
    admin = await asyncpg.connect(dsn)
    try:
        before = {record["pid"] for record in await admin.fetch(CLIENTS)}

        async def ours() -> int:
            return len({record["pid"] for record in await admin.fetch(CLIENTS)} - before)

        catalog = await PostgresCatalog.open(dsn, pool_size=4)
        await asyncio.gather(*(catalog.get_row(1) for _ in range(8)))
        assert await ours() >= 1
        await catalog.aclose()
        deadline = time.monotonic() + 10
        while await ours() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert await ours() == 0
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


async def test_behind_a_transaction_pooler_cached_statements_break_and_the_pooler_mode_does_not(
    dsn: str, pgbouncer_dsn: str
) -> None:
    """Through pgbouncer in transaction mode, asyncpg's cached prepared statements are missing on the
    next server connection (26000, a rejection: rows would be dead-lettered); with the pool mode for a
    transaction pooler every read and merge of the same load succeeds."""
    await insert_rows(dsn, [{"status": "published", "meta": {}} for _ in range(100)])
    patch = MetaPatch(patch={"x": 1}, defaults={})

    async def load(catalog: PostgresCatalog) -> list[object]:
        reads = await asyncio.gather(*(catalog.get_row(i) for i in range(1, 101)), return_exceptions=True)
        merges = await asyncio.gather(
            *(catalog.merge_meta(i, patch) for i in range(1, 101)), return_exceptions=True
        )
        return [outcome for outcome in [*reads, *merges] if isinstance(outcome, BaseException)]

    cached = await PostgresCatalog.open(pgbouncer_dsn, transaction_pooler=False)
    try:
        failures = await load(cached)
    finally:
        await cached.aclose()
    assert failures, "expected missing prepared statements behind a transaction pooler"
    assert all(isinstance(f, UpstreamRejected) and "26000" in str(f) for f in failures)

    pooled = await PostgresCatalog.open(pgbouncer_dsn, transaction_pooler=True)
    try:
        assert await load(pooled) == []
        merged = await pooled.merge_many([(i, MetaPatch(patch={"y": i}, defaults={})) for i in range(1, 41)])
        assert sorted(merged) == list(range(1, 41))
    finally:
        await pooled.aclose()


@pytest.mark.parametrize(
    ("dsn", "mode", "expected"),
    [
        ("postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres", "auto", True),
        ("postgresql://u:p@aws-0-eu.pooler.supabase.com:5432/postgres", "auto", False),  # session mode
        ("postgresql://u:p@db.example.org/postgres", "auto", False),
        ("postgresql://u:p@pgbouncer:6432/postgres", "transaction", True),
        ("postgresql://u:p@db:6543/postgres", "session", False),
        ("postgresql://u:p@db:notaport/postgres", "auto", False),
    ],
)
def test_the_transaction_pooler_is_recognised_by_port_or_told(dsn: str, mode: str, expected: bool) -> None:
    assert behind_transaction_pooler(dsn, mode) is expected


async def test_catalog_pool_mode_reaches_the_catalog_the_workers_open(
    dsn: str, pgbouncer_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CATALOG_DSN on a pooler at a port auto cannot recognise, CATALOG_POOL_MODE=transaction: the
    catalog the programs open (`open_catalog`) reads and merges under load through it; a value that
    is not a mode is a configuration error naming the variable."""
    await insert_rows(dsn, [{"status": "published", "meta": {}} for _ in range(60)])
    monkeypatch.setenv("CATALOG_DSN", pgbouncer_dsn)
    monkeypatch.setenv("CATALOG_POOL_MODE", "transaction")
    settings = load_settings([CatalogSettings])
    http = make_client(5.0)
    try:
        async with open_catalog(settings, http) as catalog:
            rows = await asyncio.gather(*(catalog.get_row(i) for i in range(1, 61)))
            merged = await asyncio.gather(
                *(catalog.merge_meta(i, MetaPatch({"z": i}, {})) for i in range(1, 61))
            )
    finally:
        await http.aclose()
    assert all(row is not None for row in rows) and all(row is not None for row in merged)
    monkeypatch.setenv("CATALOG_POOL_MODE", "pgbouncer")
    with pytest.raises(ConfigError, match="CATALOG_POOL_MODE"):
        load_settings([CatalogSettings])
