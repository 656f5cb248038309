"""The publisher-discord metrics table on PostgreSQL directly (asyncpg), for catalogs configured with
a DSN. The column types are PMOVES' to choose (it ships no DDL): ids and timestamps are compared and
read as text, so a `uuid` or `text` id column and any timestamp type work alike."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from backfill.pgcatalog import DRIVER_ERRORS, catalog_error, quote_identifier
from producer.deliveries import DeliveryRecord

_UNDEFINED_TABLE = "42P01"


def records_sql(table: str) -> str:
    return (
        "select published_event_id::text as published_event_id, webhook_success,"  # noqa: S608 - quoted identifier
        f" channel::text as channel, published_at::text as published_at from {table}"
        " where published_event_id::text = any($1::text[])"
    )


class PostgresMetricsTable:
    """The `MetricsTable` port on a PostgreSQL DSN: one short connection per read."""

    def __init__(self, dsn: str, table: str, *, timeout: float = 10.0) -> None:
        self.name = table
        self._dsn = dsn
        self._sql = records_sql(quote_identifier(table))
        self._timeout = timeout

    async def records(self, event_ids: Sequence[str]) -> list[DeliveryRecord] | None:
        try:
            conn = await asyncpg.connect(  # no statement cache: a transaction pooler may sit in between
                self._dsn, timeout=self._timeout, command_timeout=self._timeout, statement_cache_size=0
            )
            try:
                found = await conn.fetch(self._sql, list(event_ids))
            finally:
                await conn.close(timeout=self._timeout)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == _UNDEFINED_TABLE:
                return None
            raise catalog_error(exc) from exc
        except DRIVER_ERRORS as exc:
            raise catalog_error(exc) from exc
        return [DeliveryRecord(**dict(record.items())) for record in found]
