"""Direct PostgreSQL adapter for the catalog port, for stacks whose database is reachable.

Same semantics as `postgrest.PostgrestCatalog`, in SQL instead of PostgREST's grammar:

- candidates: `status = 'published' and meta->>'jellyfin_public_url' is null` (a missing key and JSON
  null both count), in id order, streamed by keyset pages (`id > $last order by id limit $n`): memory
  stays flat in the size of the catalog and no transaction stays open between pages; the enriched
  rows are the other published ones (`is not null`);
- `merge_meta` is one statement, `meta = $defaults || coalesce(meta, '{}') || $patch`, evaluated under
  the row lock, so concurrent merges of different keys never lose one; `merge_many` is the same
  update joined to `jsonb_to_recordset` of the items, after locking its rows in id order in the same
  transaction (two overlapping batches then wait for each other instead of deadlocking).

asyncpg's errors become `backfill.core.errors` here: connection loss, timeouts, serialization failures and
administrator shutdowns are retryable (`UpstreamUnavailable`); a missing table, a denied permission or
any other SQL error retrying cannot fix is an `UpstreamRejected`. Every query is reported to the
observer as `("catalog", 200 | None, seconds)`, the same shape the PostgREST adapter reports.

Every statement here is safe to run again (reads, and merges that give the same row however often they
run), so a lost connection, a serialization failure, a deadlock, too many connections or a server
shutting down is tried again within the delivery (`RETRY_ATTEMPTS` in all, jittered backoff), on a
fresh pooled connection; a statement timeout is not (it already took `command_timeout`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import msgspec

from backfill.adapters.catalog import keyset_pages, merge_batched, merged_or_gone
from backfill.adapters.pgerrors import DRIVER_ERRORS, again_on_transient, catalog_error
from backfill.adapters.transport import Observer, no_observer
from backfill.core.catalog import PUBLISHED, ROW_COLUMNS, MergeItem, MergeResults
from backfill.core.errors import ConfigError, UpstreamUnavailable
from backfill.core.model import Row
from backfill.core.payload import MetaPatch
from backfill.core.related import GAP_KEY

SERVICE = "catalog"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_encoder = msgspec.json.Encoder()
TRANSACTION_POOLER_PORT = 6543  # Supabase's pooler (Supavisor) in transaction mode; 5432 is session mode


def behind_transaction_pooler(dsn: str, pool_mode: str = "auto") -> bool:
    """Whether the DSN reaches PostgreSQL through a pooler in transaction mode: `transaction` /
    `session` say so; `auto` recognises Supabase's transaction pooler by its port, 6543."""
    if pool_mode != "auto":
        return pool_mode == "transaction"
    try:
        return urlsplit(dsn).port == TRANSACTION_POOLER_PORT
    except ValueError:  # an unreadable port: asyncpg will say what is wrong with the DSN
        return False


def quote_identifier(name: str) -> str:
    """`name` as a quoted SQL identifier; anything but a plain identifier is a configuration error."""
    if not _IDENTIFIER.match(name):
        raise ConfigError(f"catalog table {name!r} is not a plain SQL identifier")
    return f'"{name}"'


_UNDEFINED_TABLE = "42P01"
T = TypeVar("T")


async def on_optional_table(
    dsn: str, seconds: float, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> T | None:
    """`work` on one short connection, for a table PMOVES may not have (the run log, publisher-discord's
    metrics): None when the table does not exist (SQLSTATE 42P01); every other driver error is
    classified (`catalog_error`). No statement cache: a transaction pooler may sit in between."""
    try:
        conn = await asyncpg.connect(dsn, timeout=seconds, command_timeout=seconds, statement_cache_size=0)
        try:
            return await work(conn)
        finally:
            await conn.close(timeout=seconds)
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == _UNDEFINED_TABLE:
            return None
        raise catalog_error(exc) from exc
    except DRIVER_ERRORS as exc:
        raise catalog_error(exc) from exc


def _encode_json(value: Any) -> str:
    return _encoder.encode(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    """jsonb arrives as Python values and goes out as JSON text."""
    await conn.set_type_codec(
        "jsonb", encoder=_encode_json, decoder=msgspec.json.decode, schema="pg_catalog", format="text"
    )


def _decode_row(record: asyncpg.Record) -> Row:
    fields = dict(record.items())
    created = fields.get("created_at")
    if isinstance(created, datetime):
        fields["created_at"] = created.isoformat()
    try:
        return msgspec.convert(fields, Row)
    except msgspec.ValidationError as exc:
        raise UpstreamUnavailable(SERVICE, f"unreadable row {fields.get('id')}: {exc}") from exc


class PostgresCatalog:
    """The catalog port on a PostgreSQL connection pool (asyncpg)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        table: str = "studio_board",
        page_size: int = 1000,
        observe: Observer = no_observer,
        close_timeout: float = 10.0,
    ) -> None:
        self._pool = pool
        self._page_size = max(1, page_size)
        self._observe = observe
        self._close_timeout = close_timeout
        self._sql = _Statements(quote_identifier(table))

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        table: str = "studio_board",
        page_size: int = 1000,
        observe: Observer = no_observer,
        pool_size: int = 10,
        command_timeout: float = 30.0,
        transaction_pooler: bool = False,
    ) -> PostgresCatalog:
        """A pool of 1 to `pool_size` connections; `command_timeout` bounds connecting and each query.

        `transaction_pooler`: the DSN points at a pooler in transaction mode (pgbouncer, Supabase's
        Supavisor on port 6543), which hands each transaction to any server connection: asyncpg's
        named prepared statements would then be missing on the next one, so none are cached.
        """
        quote_identifier(table)  # fail on a bad name before connecting
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max(1, pool_size),
                timeout=command_timeout,
                command_timeout=command_timeout,
                init=_init_connection,
                statement_cache_size=0 if transaction_pooler else 100,
            )
        except DRIVER_ERRORS as exc:
            raise catalog_error(exc) from exc
        return cls(pool, table=table, page_size=page_size, observe=observe, close_timeout=command_timeout)

    async def _fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """Run one query on a pooled connection, observed and with its errors mapped; a transient
        failure is tried again (`again_on_transient`)."""
        return await self._observed(lambda: self._pool.fetch(sql, *args))

    async def _observed(self, call: Callable[[], Awaitable[list[asyncpg.Record]]]) -> list[asyncpg.Record]:
        """`call` with every try observed as one catalog request (`None` status when it failed)."""
        started = time.perf_counter()

        def failed() -> None:
            nonlocal started
            self._observe(SERVICE, None, time.perf_counter() - started)
            started = time.perf_counter()

        records = await again_on_transient(call, failed)
        self._observe(SERVICE, 200, time.perf_counter() - started)
        return records

    async def _rows(self, sql: str, *args: object) -> list[Row]:
        return [_decode_row(record) for record in await self._fetch(sql, *args)]

    async def _locked_rows(
        self, lock: str, lock_args: tuple[object, ...], sql: str, *args: object
    ) -> list[Row]:
        """`lock` then `sql` in one transaction on one pooled connection, observed as one call; the
        whole transaction is tried again after a transient failure (it rolled back)."""

        async def transaction() -> list[asyncpg.Record]:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(lock, *lock_args)
                records: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return records

        return [_decode_row(record) for record in await self._observed(transaction)]

    async def count_candidates(self, since_id: int = 0) -> int | None:
        records = await self._fetch(self._sql.count, since_id)
        return int(records[0][0])

    async def count_enriched(self) -> int | None:
        records = await self._fetch(self._sql.count_enriched)
        return int(records[0][0])

    async def count_youtube_gaps(self) -> int | None:
        records = await self._fetch(self._sql.count_gaps)
        return int(records[0][0])

    def stream_candidates(self, since_id: int = 0, limit: int | None = None) -> AsyncIterator[list[Row]]:
        return keyset_pages(self._candidate_page, since_id, limit, self._page_size)

    def republished_rows(self, run_id: str | None = None) -> AsyncIterator[list[Row]]:
        async def page(after: int, size: int) -> list[Row]:
            return await self._rows(self._sql.republished, run_id, after, size)

        return keyset_pages(page, 0, None, self._page_size)

    async def _candidate_page(self, after: int, size: int) -> list[Row]:
        return await self._rows(self._sql.page, after, size)

    async def fetch_rows(self, ids: Sequence[int]) -> list[Row]:
        if not ids:
            return []
        return await self._rows(self._sql.by_ids, list(ids))

    async def get_row(self, row_id: int) -> Row | None:
        rows = await self._rows(self._sql.by_id, row_id)
        return rows[0] if rows else None

    async def merge_meta(self, row_id: int, patch: MetaPatch) -> Row | None:
        rows = await self._rows(self._sql.merge, row_id, patch.defaults, patch.patch)
        return await merged_or_gone(self.get_row, row_id, rows[0] if rows else None)

    async def merge_many(self, items: Sequence[MergeItem]) -> MergeResults:
        return await merge_batched(items, self._merge_batch, self.merge_meta, self.fetch_rows)

    async def _merge_batch(self, p_items: list[dict[str, Any]]) -> list[Row]:
        ids = sorted(item["id"] for item in p_items)  # locked in id order
        return await self._locked_rows(self._sql.lock, (ids,), self._sql.merge_many, p_items)

    async def aclose(self) -> None:
        """Close the pool; connections still busy after `close_timeout` are terminated."""
        try:
            await asyncio.wait_for(self._pool.close(), self._close_timeout)
        except TimeoutError:
            self._pool.terminate()


# Templates, filled once per catalog with the table name `quote_identifier` checked and quoted; every
# value reaches the server as a bind parameter.
_CANDIDATE = f"status = '{PUBLISHED}' and (meta ->> 'jellyfin_public_url') is null"
_ENRICHED = f"status = '{PUBLISHED}' and (meta ->> 'jellyfin_public_url') is not null"
_COUNT = "select count(*) from {table} where {candidate} and id > $1"
_COUNT_ENRICHED = "select count(*) from {table} where {enriched}"
_PAGE = "select {columns} from {table} where {candidate} and id > $1 order by id limit $2"
_COUNT_GAPS = "select count(*) from {table} where (meta ->> '{gap}') is not null"
_REPUBLISHED = (
    "select {columns} from {table} where (meta ->> 'backfill_event_id') is not null"
    " and ($1::text is null or meta ->> 'backfill_run_id' = $1) and id > $2 order by id limit $3"
)
_BY_IDS = "select {columns} from {table} where id = any($1::bigint[])"
_BY_ID = "select {columns} from {table} where id = $1"
# Both merges leave a meta that is JSON but not an object alone (`||` would append to an array).
_MERGE = (
    "update {table} set meta = $2::jsonb || coalesce(meta, '{{}}'::jsonb) || $3::jsonb"
    " where id = $1 and jsonb_typeof(coalesce(meta, '{{}}'::jsonb)) = 'object' returning {columns}"
)
_LOCK = "select 1 from {table} where id = any($1::bigint[]) order by id for update"
_MERGE_MANY = (
    "update {table} as board"
    " set meta = coalesce(item.defaults, '{{}}'::jsonb) || coalesce(board.meta, '{{}}'::jsonb)"
    " || coalesce(item.patch, '{{}}'::jsonb)"
    " from jsonb_to_recordset($1::jsonb) as item(id bigint, patch jsonb, defaults jsonb)"
    " where board.id = item.id and jsonb_typeof(coalesce(board.meta, '{{}}'::jsonb)) = 'object'"
    " returning {board_columns}"
)


class _Statements:
    """The statements for one quoted table name."""

    def __init__(self, table: str) -> None:
        def fill(template: str) -> str:
            return template.format(
                table=table,
                columns=", ".join(ROW_COLUMNS),
                board_columns=", ".join(f"board.{column}" for column in ROW_COLUMNS),
                candidate=_CANDIDATE,
                enriched=_ENRICHED,
                gap=GAP_KEY,
            )

        self.count = fill(_COUNT)
        self.count_enriched = fill(_COUNT_ENRICHED)
        self.count_gaps = fill(_COUNT_GAPS)
        self.republished = fill(_REPUBLISHED)
        self.page = fill(_PAGE)
        self.by_ids = fill(_BY_IDS)
        self.by_id = fill(_BY_ID)
        self.merge = fill(_MERGE)
        self.lock = fill(_LOCK)
        self.merge_many = fill(_MERGE_MANY)
