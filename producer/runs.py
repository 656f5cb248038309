"""A producer run's id (`new_run_id`: `run-<UTC stamp>-<6 hex>`; a replay's is `replay-...`) and the
optional run log: one `backfill_runs` row per producer run (`sql/002_backfill_runs.sql`).

`RunLog` owns what is recorded and how failures are handled, whatever the catalog backend:

- `start()` upserts `{id, started_at, finished_at: null, mode, options, counts: null}` (re-running with
  the same id starts it afresh); `finish()` sets `{finished_at, counts}` on that id;
- when the table is not installed, the first write logs one notice and the log stays silent after;
- any other failure is a warning: the run log never fails an enqueue.

The records are `backfill.core.runs`'; a `RunTable` (`backfill.core.ports`) only writes them, through
PostgREST or, when the catalog is a PostgreSQL DSN, directly (`backfill.wiring.build_run_table`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from backfill.adapters.transport import HttpClient
from backfill.core.errors import UpstreamError
from backfill.core.ports import RunTable
from backfill.core.runs import finish_record, start_record
from backfill.settings import SettingsBundle
from backfill.wiring import build_run_table

log = logging.getLogger("producer")
NOT_INSTALLED = "backfill_runs table not installed; skipping run log (see sql/002_backfill_runs.sql)"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def new_run_id(now: datetime | None = None) -> str:
    return f"run-{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


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


def run_log_for(settings: SettingsBundle, http: HttpClient) -> RunLog:
    """The run log on the configured catalog: PostgreSQL directly when a DSN is set, else PostgREST."""
    return RunLog(build_run_table(settings, http))
