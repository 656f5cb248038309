"""The two catalog backends behind one interface, so every contract test runs against both.

- `postgrest`: `PostgrestCatalog` over HTTP to the PostgREST double (merge RPC installed), served in
  the test's loop;
- `postgres`: `PostgresCatalog` on a real PostgreSQL (one embedded server per session, schema and
  merge function installed as an operator would; the table is emptied before each test);
- `pgbouncer`: the same server through a real pgbouncer in transaction mode, as behind Supabase's
  pooler on port 6543 (no prepared statement survives from one transaction to the next).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest

from backfill.adapters.pgcatalog import PostgresCatalog
from backfill.adapters.pgerrors import RETRY_ATTEMPTS
from backfill.adapters.postgrest import PostgrestCatalog
from backfill.adapters.transport import READ_ATTEMPTS, HttpClient, Observer, make_client, no_observer
from backfill.core.ports import Catalog
from backfill_doubles.natsserver import free_port
from backfill_doubles.pgbouncer import PgBouncer
from backfill_doubles.pgbouncer import binary as pgbouncer_binary
from backfill_doubles.postgres import (
    EmbeddedPostgres,
    create_schema,
    execute,
    insert_rows,
    install_merge_function,
)
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.postgrest_query import PostgrestError
from backfill_doubles.serve import serve

T = TypeVar("T")
KEY = "service-role-key"
MISSING_TABLE = "no_such_table"


class Backend(Protocol):
    name: str
    tries_per_read: int  # requests one transiently failing read makes before it gives up

    async def insert(self, rows: list[dict[str, Any]]) -> list[int]:
        """Store rows (any subset of the columns) directly, bypassing the catalog; returns their ids."""

    async def catalog(
        self, *, page_size: int = 1000, table: str = "studio_board", observe: Observer = no_observer
    ) -> Catalog:
        """A catalog adapter on this backend, closed when the test ends."""

    async def interrupted(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` while the backend fails every one of its tries transiently (503 / connection
        terminated mid-query)."""

    async def interrupted_once(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` while the backend fails only its first try transiently."""

    async def unreachable(self) -> Catalog:
        """A catalog adapter pointed at a port where nothing listens (may raise while connecting)."""

    async def reject_writes(self, row_id: int) -> None:
        """From now on every write that touches `row_id` is refused for good (PostgREST 400 / a
        trigger raising P0001), whichever other rows it also touches."""


class PostgrestBackend:
    name = "postgrest"
    tries_per_read = READ_ATTEMPTS

    def __init__(self, double: PostgrestDouble, url: str, http: HttpClient) -> None:
        self.double, self.url, self.http = double, url, http

    async def insert(self, rows: list[dict[str, Any]]) -> list[int]:
        return [int(self.double.add_row(**row)["id"]) for row in rows]

    async def catalog(
        self, *, page_size: int = 1000, table: str = "studio_board", observe: Observer = no_observer
    ) -> Catalog:
        return PostgrestCatalog(self.http, self.url, KEY, table=table, page_size=page_size, observe=observe)

    async def interrupted(self, call: Callable[[], Awaitable[T]]) -> T:
        """503 PGRST002 to every try of the call (reads and merges are tried READ_ATTEMPTS times)."""
        return await self._failing(READ_ATTEMPTS, call)

    async def interrupted_once(self, call: Callable[[], Awaitable[T]]) -> T:
        return await self._failing(1, call)

    async def _failing(self, tries: int, call: Callable[[], Awaitable[T]]) -> T:
        self.double.fail_next = tries
        try:
            return await call()
        finally:
            self.double.fail_next = 0

    async def unreachable(self) -> Catalog:
        return PostgrestCatalog(self.http, f"http://127.0.0.1:{free_port()}", KEY)

    async def reject_writes(self, row_id: int) -> None:
        def refuse(touched: int) -> None:
            if touched == row_id:
                raise PostgrestError(400, "P0001", f"row {row_id} is read-only")

        self.double.before_write = refuse


class PostgresBackend:
    """PostgreSQL directly, or (with `pooler_dsn`) through pgbouncer in transaction mode; rows are
    inserted, and failures arranged, on the server directly either way."""

    def __init__(self, dsn: str, pooler_dsn: str | None = None) -> None:
        self.dsn = dsn
        self.pooler_dsn = pooler_dsn
        self.name = "postgres" if pooler_dsn is None else "pgbouncer"
        self.tries_per_read = RETRY_ATTEMPTS
        self._opened: list[Catalog] = []

    async def insert(self, rows: list[dict[str, Any]]) -> list[int]:
        return await insert_rows(self.dsn, rows)

    async def catalog(
        self, *, page_size: int = 1000, table: str = "studio_board", observe: Observer = no_observer
    ) -> Catalog:
        catalog = await PostgresCatalog.open(
            self.pooler_dsn or self.dsn,
            table=table,
            page_size=page_size,
            observe=observe,
            transaction_pooler=self.pooler_dsn is not None,
        )
        self._opened.append(catalog)
        return catalog

    async def interrupted(self, call: Callable[[], Awaitable[T]]) -> T:
        """Hold an exclusive lock so each try of `call` blocks in the server, then terminate its backend,
        every try (the adapter tries RETRY_ATTEMPTS times)."""
        return await self._terminating(self.tries_per_read, call)

    async def interrupted_once(self, call: Callable[[], Awaitable[T]]) -> T:
        return await self._terminating(1, call)

    async def _terminating(self, tries: int, call: Callable[[], Awaitable[T]]) -> T:
        admin = await asyncpg.connect(self.dsn)
        try:
            async with admin.transaction():
                await admin.execute("lock table public.studio_board in access exclusive mode")
                task = asyncio.ensure_future(call())
                try:
                    for _ in range(tries):
                        pid = await _lock_waiter(admin, task)
                        await admin.fetchval("select pg_terminate_backend($1)", pid)
                        await _gone(admin, pid)
                except BaseException:
                    task.cancel()
                    raise
            return await task  # the lock is released: a try that survived completes here
        finally:
            await admin.close()

    async def unreachable(self) -> Catalog:
        return await PostgresCatalog.open(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")

    async def reject_writes(self, row_id: int) -> None:
        await execute(self.dsn, REJECT_TRIGGER.format(row_id=int(row_id)))

    async def close(self) -> None:
        for catalog in self._opened:
            await catalog.aclose()
        await execute(self.dsn, DROP_REJECT_TRIGGER)


REJECT_TRIGGER = """
create or replace function public.backfill_test_reject() returns trigger language plpgsql as $$
begin
    if new.id = {row_id} then
        raise exception 'row % is read-only', new.id using errcode = 'P0001';
    end if;
    return new;
end
$$;
create trigger backfill_test_reject before update on public.studio_board
    for each row execute function public.backfill_test_reject();
"""
DROP_REJECT_TRIGGER = """
drop trigger if exists backfill_test_reject on public.studio_board;
drop function if exists public.backfill_test_reject();
"""


async def _lock_waiter(admin: asyncpg.Connection, task: asyncio.Future[Any], timeout: float = 10.0) -> int:
    """The pid of the one backend waiting on a lock, polled until it shows up (or `task` ends: raises)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not task.done():
        await admin.execute("select pg_stat_clear_snapshot()")  # this transaction sees it anew
        pid = await admin.fetchval(
            "select pid from pg_stat_activity where wait_event_type = 'Lock' and backend_type = 'client backend'"
            " and pid <> pg_backend_pid()"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # its error, or: it finished without waiting on the lock
    raise TimeoutError("no backend started waiting on the table lock")


async def _gone(admin: asyncpg.Connection, pid: int, timeout: float = 10.0) -> None:
    """Until backend `pid` has left pg_stat_activity (the next try must not be mistaken for it)."""
    deadline = time.monotonic() + timeout
    while True:
        await admin.execute("select pg_stat_clear_snapshot()")
        if not await admin.fetchval("select 1 from pg_stat_activity where pid = $1", pid):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"backend {pid} still there")
        await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """One real PostgreSQL per session, with studio_board and the shipped merge function installed."""
    with EmbeddedPostgres() as server:
        asyncio.run(create_schema(server.dsn))
        asyncio.run(install_merge_function(server.dsn))
        yield server.dsn


@pytest.fixture(scope="session")
def pgbouncer_dsn(postgres_dsn: str) -> Iterator[str]:
    """A real pgbouncer in transaction mode in front of the session's PostgreSQL (Supabase's pooler on
    port 6543 behaves the same way)."""
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer not installed (Debian package `pgbouncer`; .ci/run installs it)")
    port = urlsplit(postgres_dsn).port
    assert port is not None
    with PgBouncer(port) as pooler:
        yield pooler.dsn


@pytest.fixture(params=["postgrest", "postgres", "pgbouncer"])
def backend_dsn(request: pytest.FixtureRequest) -> tuple[str, str | None] | None:
    """None for the PostgREST double; else the session's PostgreSQL DSN (started on first use) and,
    for `pgbouncer`, the pooler's DSN in front of it."""
    if request.param == "postgrest":
        return None
    dsn: str = request.getfixturevalue("postgres_dsn")
    pooler: str | None = request.getfixturevalue("pgbouncer_dsn") if request.param == "pgbouncer" else None
    return dsn, pooler


@pytest.fixture
async def backend(backend_dsn: tuple[str, str | None] | None) -> AsyncIterator[Backend]:
    if backend_dsn is not None:
        await execute(backend_dsn[0], "truncate public.studio_board restart identity")
        postgres = PostgresBackend(*backend_dsn)
        try:
            yield postgres
        finally:
            await postgres.close()
        return
    double = PostgrestDouble(KEY, rpc_installed=True)
    http = make_client(5.0)
    try:
        async with serve(double.app()) as url:
            yield PostgrestBackend(double, url, http)
    finally:
        await http.aclose()


def mixed_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` rows with explicit ids inserted in shuffled order, covering every case of the candidate rule."""
    rows = []
    for i in range(1, n + 1):
        row: dict[str, Any] = {"id": i, "title": f"title {i}", "status": "published"}
        if i % 10 == 0:
            row["status"] = "draft"
        elif i % 13 == 0:
            row["status"] = "approved"
        if i % 7 == 0:
            row["meta"] = {"jellyfin_public_url": f"https://watch.example.org/{i}"}
        elif i % 3 == 0:
            row["meta"] = {"jellyfin_public_url": None, "slug": f"s{i}"}
        elif i % 11 == 0:
            row["meta"] = None
        elif i % 17 != 0:  # every 17th row takes the column default
            row["meta"] = {"slug": f"s{i}"}
        rows.append(row)
    random.Random(seed).shuffle(rows)
    return rows


def enriched_ids(rows: list[dict[str, Any]]) -> list[int]:
    """Published rows that carry a `jellyfin_public_url` value (any value, even an empty string)."""
    return sorted(
        row["id"]
        for row in rows
        if row.get("status") == "published" and (row.get("meta") or {}).get("jellyfin_public_url") is not None
    )


def candidate_ids(rows: list[dict[str, Any]], since_id: int = 0) -> list[int]:
    """The rule, spelled out: published, and no `jellyfin_public_url` value (missing or JSON null)."""
    return sorted(
        row["id"]
        for row in rows
        if row["id"] > since_id
        and row.get("status") == "published"
        and (row.get("meta") or {}).get("jellyfin_public_url") is None
    )
