"""`backfill_runs` on PostgreSQL directly (asyncpg), for catalogs configured with a DSN.

The run log's records (`backfill.core.runs`) are written as given: their keys name the columns, and
`jsonb_populate_record` turns the JSON values into the table's types (text, timestamptz, jsonb), the
same conversion PostgREST applies to a request body. The run log writes twice per run, so each write
opens its own short connection instead of holding a pool (`pgcatalog.on_optional_table`: a missing
table is SQLSTATE `42P01`; every other driver error becomes a `backfill.core.errors.UpstreamError`).
"""

from __future__ import annotations

import msgspec

from backfill.adapters.pgcatalog import on_optional_table, quote_identifier
from backfill.core.runs import TABLE, RunRecord

_encoder = msgspec.json.Encoder()


def upsert_sql(table: str, columns: list[str]) -> str:
    """Insert the record's columns; on an existing id, overwrite them (PostgREST's merge-duplicates)."""
    names = [quote_identifier(c) for c in columns]
    updates = ", ".join(f"{name} = excluded.{name}" for name in names if name != '"id"')
    return (
        f"insert into {table} ({', '.join(names)})"  # noqa: S608 - identifiers checked and quoted
        f" select {', '.join(names)} from jsonb_populate_record(null::{table}, $1::jsonb)"
        f" on conflict (id) do update set {updates}"
    )


def update_sql(table: str, columns: list[str]) -> str:
    """Set the record's columns on the row with id `$1`."""
    names = [quote_identifier(c) for c in columns]
    updates = ", ".join(f"{name} = p.{name}" for name in names)
    return (
        f"update {table} set {updates}"  # noqa: S608 - identifiers checked and quoted
        f" from jsonb_populate_record(null::{table}, $2::jsonb) as p where {table}.id = $1"
    )


class PostgresRunTable:
    """The `RunTable` port (`backfill.core.ports`) on a PostgreSQL DSN."""

    def __init__(self, dsn: str, *, table: str = TABLE, timeout: float = 10.0) -> None:
        self._dsn = dsn
        self._table = quote_identifier(table)
        self._timeout = timeout

    async def upsert(self, record: RunRecord) -> bool:
        return await self._execute(upsert_sql(self._table, list(record)), _json(record))

    async def update(self, run_id: str, record: RunRecord) -> bool:
        return await self._execute(update_sql(self._table, list(record)), run_id, _json(record))

    async def _execute(self, sql: str, *args: object) -> bool:
        """False when the table does not exist."""
        return (
            await on_optional_table(self._dsn, self._timeout, lambda conn: conn.execute(sql, *args))
            is not None
        )


def _json(record: RunRecord) -> str:
    return _encoder.encode(record).decode()
