"""The optional run log: one `backfill_runs` row per producer run (`sql/002_backfill_runs.sql`).

`RunLog` owns what is recorded and how failures are handled, whatever the catalog backend:

- `start()` upserts `{id, started_at, finished_at: null, mode, options, counts: null}` (re-running with
  the same id starts it afresh); `finish()` sets `{finished_at, counts}` on that id;
- when the table is not installed, the first write logs one notice and the log stays silent after;
- any other failure is a warning: the run log never fails an enqueue.

A `RunTable` only writes those records: `PostgrestRunTable` here (POST with merge-duplicates, PATCH
`?id=eq.`; a missing table is 404 `PGRST205`, or `42P01` from older PostgREST) and, when the catalog
is a PostgreSQL DSN, `producer.pgruns.PostgresRunTable` (SQLSTATE `42P01`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from backfill.adapters.postgrest import auth_headers
from backfill.adapters.transport import HttpClient, HttpResponse, Upstream, raise_for_status
from backfill.core.errors import UpstreamError
from backfill.settings import BackfillSettings, CatalogSettings, SettingsBundle

log = logging.getLogger("producer")
SERVICE = "catalog"
TABLE = "backfill_runs"
NOT_INSTALLED = "backfill_runs table not installed; skipping run log (see sql/002_backfill_runs.sql)"
_MISSING_TABLE_CODES = {"PGRST205", "42P01"}

Record = dict[str, Any]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def start_record(run_id: str, mode: str, options: Mapping[str, Any], now: datetime) -> Record:
    """The whole run row as a run starts."""
    return {
        "id": run_id,
        "started_at": now.isoformat(),
        "finished_at": None,
        "mode": mode,
        "options": dict(options),
        "counts": None,
    }


def finish_record(counts: Mapping[str, int], now: datetime) -> Record:
    """The columns a finished run sets."""
    return {"finished_at": now.isoformat(), "counts": dict(counts)}


class RunTable(Protocol):
    """Where run records are written. Each write returns False when the table does not exist and
    raises an `UpstreamError` for any other failure."""

    async def upsert(self, record: Record) -> bool: ...

    async def update(self, run_id: str, record: Record) -> bool: ...


class RunLog:
    def __init__(self, table: RunTable, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._table = table
        self._clock = clock
        self.enabled = True

    async def start(self, run_id: str, mode: str, options: Mapping[str, Any]) -> None:
        """Record that a run started."""
        record = start_record(run_id, mode, options, self._clock())
        await self._write(lambda: self._table.upsert(record))

    async def finish(self, run_id: str, counts: Mapping[str, int]) -> None:
        """Record when the run finished and what it counted."""
        record = finish_record(counts, self._clock())
        await self._write(lambda: self._table.update(run_id, record))

    async def _write(self, write: Callable[[], Awaitable[bool]]) -> None:
        if not self.enabled:
            return
        try:
            installed = await write()
        except UpstreamError as exc:
            log.warning("run log: %s", exc)
            return
        if not installed:
            self.enabled = False
            log.info(NOT_INSTALLED)


def table_missing(response: HttpResponse) -> bool:
    """True when PostgREST answers that the table does not exist."""
    if response.status_code != 404:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") in _MISSING_TABLE_CODES


class PostgrestRunTable:
    """`backfill_runs` through PostgREST (Supabase REST)."""

    def __init__(self, http: HttpClient, rest_url: str, service_key: str, table: str = TABLE) -> None:
        self._up = Upstream(http, SERVICE)
        self._url = f"{rest_url.rstrip('/')}/{table}"
        self._headers = {**auth_headers(service_key), "Content-Type": "application/json"}

    async def upsert(self, record: Record) -> bool:
        return await self._send("POST", {}, record, "resolution=merge-duplicates,return=minimal")

    async def update(self, run_id: str, record: Record) -> bool:
        return await self._send("PATCH", {"id": f"eq.{run_id}"}, record, "return=minimal")

    async def _send(self, method: str, params: dict[str, str], body: Record, prefer: str) -> bool:
        response = await self._up.request(
            method,
            self._url,
            params=params,
            content=json.dumps(body),
            headers={**self._headers, "Prefer": prefer},
        )
        if table_missing(response):
            return False
        raise_for_status(SERVICE, response)
        return True


def run_log_for(settings: SettingsBundle, http: HttpClient) -> RunLog:
    """The run log on the configured catalog: PostgreSQL directly when a DSN is set, else PostgREST."""
    catalog = settings.get(CatalogSettings)
    if catalog.dsn is not None:
        from producer.pgruns import PostgresRunTable  # noqa: PLC0415 - the driver loads only when used

        timeout = settings.get(BackfillSettings).http_timeout
        return RunLog(PostgresRunTable(catalog.dsn.get_secret_value(), timeout=timeout))
    assert catalog.rest_url is not None and catalog.service_key is not None  # checked by load_settings
    return RunLog(PostgrestRunTable(http, catalog.rest_url, catalog.service_key.get_secret_value()))
