"""`sql/003_publisher_discord_metrics.sql` on a real PostgreSQL: it installs (again and again, over a table
made by hand before it), holds every column publisher-discord writes, and takes its upsert
(`on_conflict=published_event_id`, as PostgREST runs it), which a table without the UNIQUE constraint
refuses with 42P10: the trap that makes a stock PMOVES stack record nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from backfill_doubles import discord_metrics
from backfill_doubles.postgres import execute

TABLE = f"public.{discord_metrics.NAME}"
# What PostgREST runs for publisher-discord's upsert (POST ?on_conflict=published_event_id with
# Prefer: resolution=merge-duplicates): insert ... on conflict (published_event_id) do update.
_NAMES = ", ".join(discord_metrics.COLUMNS)
UPSERT = (
    f"insert into {TABLE} ({_NAMES}) select {_NAMES} from jsonb_populate_record(null::{TABLE}, $1::jsonb)"
    " on conflict (published_event_id) do update set webhook_success = excluded.webhook_success"
)


@pytest.fixture
async def conn(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    await execute(postgres_dsn, f"drop table if exists {TABLE}")
    connection = await asyncpg.connect(postgres_dsn)
    try:
        yield connection
    finally:
        await connection.close()
        await execute(postgres_dsn, f"drop table if exists {TABLE}")


def row(event: str, success: bool) -> str:
    envelope = {
        "id": event,
        "topic": "content.published.v1",
        "payload": {"artifact_uri": "s3://outputs/a.mp4"},
    }
    record: dict[str, Any] = discord_metrics.metrics_record(envelope, success)
    return json.dumps(record)


async def columns(conn: asyncpg.Connection) -> list[str]:
    found = await conn.fetch(
        "select column_name from information_schema.columns where table_schema = 'public' and table_name = $1"
        " order by ordinal_position",
        discord_metrics.NAME,
    )
    return [r["column_name"] for r in found]


async def test_the_table_holds_what_publisher_discord_writes_and_takes_its_upsert(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    for _ in range(2):  # safe to run again
        await execute(postgres_dsn, discord_metrics.DDL)
    assert await columns(conn) == ["id", *discord_metrics.COLUMNS]
    await conn.execute(UPSERT, row("e1", False))
    await conn.execute(UPSERT, row("e1", True))  # the same event again: one record, updated
    await conn.execute(UPSERT, row("e2", True))
    stored = await conn.fetch(f"select published_event_id, webhook_success from {TABLE} order by id")
    assert [(r[0], r[1]) for r in stored] == [("e1", True), ("e2", True)]


async def test_row_level_security_is_on_and_only_the_service_role_is_granted(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    await execute(
        postgres_dsn,
        "do $$ begin create role service_role noinherit bypassrls;"
        " exception when duplicate_object then null; end $$",
    )
    await execute(postgres_dsn, discord_metrics.DDL)
    assert await conn.fetchval("select relrowsecurity from pg_class where oid = $1::regclass", TABLE)
    grants = await conn.fetch(
        "select grantee, privilege_type from information_schema.role_table_grants where table_name = $1"
        " and grantee <> current_user",
        discord_metrics.NAME,
    )
    assert {(g[0], g[1]) for g in grants} == {("service_role", p) for p in ("SELECT", "INSERT", "UPDATE")}
    policy = await conn.fetchval(
        "select roles::text from pg_policies where tablename = $1", discord_metrics.NAME
    )
    assert policy == "{service_role}"


async def test_a_table_made_by_hand_refuses_the_upsert_until_the_migration_runs(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    """Without the UNIQUE constraint PostgreSQL answers publisher-discord's upsert with 42P10; the
    migration adds the missing columns and the constraint to the existing table."""
    await conn.execute(f"create table {TABLE} (published_event_id text, webhook_success boolean)")
    with pytest.raises(asyncpg.PostgresError) as refused:
        await conn.execute(
            f"insert into {TABLE} (published_event_id, webhook_success) values ('e1', true)"
            " on conflict (published_event_id) do update set webhook_success = excluded.webhook_success"
        )
    assert refused.value.sqlstate == "42P10"
    await execute(postgres_dsn, discord_metrics.DDL)
    assert set(discord_metrics.COLUMNS) <= set(await columns(conn))
    recorder = discord_metrics.PostgresRecorder(postgres_dsn)
    try:
        await recorder.record(discord_metrics.metrics_record({"id": "e1", "topic": "t", "payload": {}}, True))
        await recorder.record(
            discord_metrics.metrics_record({"id": "e1", "topic": "t", "payload": {}}, False)
        )
    finally:
        await recorder.aclose()
    assert await conn.fetchval(f"select count(*) from {TABLE}") == 1
