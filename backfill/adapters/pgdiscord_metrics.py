"""The publisher-discord metrics table on PostgreSQL directly (asyncpg), for catalogs configured with
a DSN. The column types are PMOVES' to choose (it ships no DDL): ids and timestamps are compared and
read as text, so a `uuid` or `text` id column and any timestamp type work alike."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from backfill.adapters.pgcatalog import on_optional_table, quote_identifier
from backfill.core.model import DeliveryRecord


def records_sql(table: str) -> str:
    return (
        "select published_event_id::text as published_event_id, webhook_success,"  # noqa: S608 - quoted identifier
        f" channel::text as channel, published_at::text as published_at from {table}"
        " where published_event_id::text = any($1::text[])"
    )


class PostgresMetricsTable:
    """The `MetricsTable` port (`backfill.core.ports`) on a PostgreSQL DSN: one short connection per read."""

    def __init__(self, dsn: str, table: str, *, timeout: float = 10.0) -> None:
        self.name = table
        self._dsn = dsn
        self._sql = records_sql(quote_identifier(table))
        self._since_sql = (
            f"select exists (select 1 from {quote_identifier(table)} where published_at::timestamptz >= $1)"  # noqa: S608 - quoted identifier
        )
        self._timeout = timeout

    async def records(self, event_ids: Sequence[str]) -> list[DeliveryRecord] | None:
        found = await on_optional_table(
            self._dsn, self._timeout, lambda conn: conn.fetch(self._sql, list(event_ids))
        )
        return None if found is None else [DeliveryRecord(**dict(record.items())) for record in found]

    async def recorded_since(self, start: datetime) -> bool:
        found = await on_optional_table(
            self._dsn, self._timeout, lambda conn: conn.fetchval(self._since_sql, start)
        )
        return bool(found)
