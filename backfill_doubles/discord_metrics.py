"""publisher-discord's metrics table (`DISCORD_METRICS_TABLE`, default `publisher_discord_metrics`) for the
doubles: its shape, and the two ways the publisher-discord double records into it.

PMOVES ships no DDL for the table (docs/upstreams.md §8); publisher-discord upserts one row per handled
event with `published_event_id` (the envelope id), `event_topic`, `channel` = `discord`,
`webhook_success`, `artifact_uri`, `namespace`, `slug`, `published_at` and its publish telemetry
(`turnaround_seconds`, `approval_latency_seconds`, `engagement`, `cost`), with
`on_conflict=published_event_id`. `DDL` is the project's own migration (`sql/003_...`), the one an
operator installs; `POSTGREST_TABLE` is the same table for the PostgREST double.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx

from backfill_doubles.postgrest_query import Table

NAME = "publisher_discord_metrics"
COLUMNS = (
    "published_event_id",
    "event_topic",
    "channel",
    "webhook_success",
    "artifact_uri",
    "namespace",
    "slug",
    "published_at",
    "turnaround_seconds",
    "approval_latency_seconds",
    "engagement",
    "cost",
)
POSTGREST_TABLE = Table(
    NAME,
    ("id", *COLUMNS),
    {
        "id": "bigint",
        "webhook_success": "boolean",
        "published_at": "timestamptz",
        "turnaround_seconds": "double precision",
        "approval_latency_seconds": "double precision",
        "engagement": "jsonb",
        "cost": "jsonb",
    },
)
DDL_FILE = Path(__file__).resolve().parents[1] / "sql" / "003_publisher_discord_metrics.sql"
DDL = DDL_FILE.read_text(encoding="utf-8")

Record = dict[str, Any]


class Recorder(Protocol):
    async def record(self, row: Record) -> None: ...

    async def aclose(self) -> None: ...


def _slug(*values: Any) -> str:
    for value in values:
        slug = re.sub(r"[^a-z0-9]+", "-", str(value or "").lower()).strip("-")
        if slug:
            return slug
    return "discord-event"


def metrics_record(envelope: dict[str, Any], success: bool) -> Record:
    """The row publisher-discord writes for one handled envelope (its `_persist_discord_rollup`; the
    telemetry is empty for events whose meta carries none, as the backfill's)."""
    payload = envelope.get("payload") or {}
    event_id = envelope.get("id")
    artifact = payload.get("artifact_uri") or payload.get("content_url") or f"discord::{event_id}"
    return {
        "published_event_id": event_id,
        "event_topic": envelope.get("topic"),
        "channel": "discord",
        "webhook_success": success,
        "artifact_uri": artifact,
        "namespace": payload.get("namespace") or "pmoves",
        "slug": _slug(payload.get("slug"), payload.get("title"), payload.get("published_path"), event_id),
        "published_at": datetime.now(UTC).isoformat(),
        "turnaround_seconds": None,
        "approval_latency_seconds": None,
        "engagement": None,
        "cost": None,
    }


class PostgrestRecorder:
    """Upserts through PostgREST: `POST /<table>?on_conflict=published_event_id`, merge-duplicates."""

    def __init__(self, rest_url: str, service_key: str) -> None:
        self._url = f"{rest_url.rstrip('/')}/{NAME}"
        self._headers = {"apikey": service_key, "Prefer": "resolution=merge-duplicates,return=minimal"}
        self._http = httpx.AsyncClient(timeout=10)

    async def record(self, row: Record) -> None:
        response = await self._http.post(
            self._url, params={"on_conflict": "published_event_id"}, json=row, headers=self._headers
        )
        response.raise_for_status()

    async def aclose(self) -> None:
        await self._http.aclose()


class PostgresRecorder:
    """Upserts straight into PostgreSQL, keyed on the envelope id (a small pool, opened on first use)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        names = ", ".join(COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "published_event_id")
        self._sql = (
            f"insert into public.{NAME} ({names})"  # noqa: S608 - fixed identifiers
            f" select {names} from jsonb_populate_record(null::public.{NAME}, $1::jsonb)"
            f" on conflict (published_event_id) do update set {updates}"
        )

    async def record(self, row: Record) -> None:
        async with self._opening:
            self._pool = self._pool or await asyncpg.create_pool(self._dsn, min_size=1, max_size=4)
        await self._pool.execute(self._sql, json.dumps(row))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()


async def install(dsn: str) -> None:
    """Create the table in PostgreSQL with the shipped migration (PMOVES itself ships no DDL)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DDL)
    finally:
        await conn.close()
