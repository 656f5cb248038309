"""The optional run log: one `backfill_runs` row per producer run, written through PostgREST.

The table comes from `sql/002_backfill_runs.sql`. When it is not installed, the first answer says so
(404 `PGRST205`, or `42P01` from older PostgREST); the log prints one notice and stays silent after.
Any other failure is a warning: the run log never fails an enqueue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from backfill.errors import UpstreamError
from backfill.postgrest import auth_headers
from backfill.transport import Upstream, error_detail

log = logging.getLogger("producer")
SERVICE = "catalog"
TABLE = "backfill_runs"
NOT_INSTALLED = "backfill_runs table not installed; skipping run log (see sql/002_backfill_runs.sql)"
_MISSING_TABLE_CODES = {"PGRST205", "42P01"}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def table_missing(response: httpx.Response) -> bool:
    """True when PostgREST answers that the table does not exist."""
    if response.status_code != 404:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("code") in _MISSING_TABLE_CODES


class RunLog:
    def __init__(
        self,
        http: httpx.AsyncClient,
        rest_url: str,
        service_key: str,
        *,
        table: str = TABLE,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._up = Upstream(http, SERVICE)
        self._url = f"{rest_url.rstrip('/')}/{table}"
        self._headers = {**auth_headers(service_key), "Content-Type": "application/json"}
        self._clock = clock
        self.enabled = True

    async def start(self, run_id: str, mode: str, options: Mapping[str, Any]) -> None:
        """Record that a run started (an upsert: re-running with the same id starts it afresh)."""
        body = {
            "id": run_id,
            "started_at": self._clock().isoformat(),
            "finished_at": None,
            "mode": mode,
            "options": dict(options),
            "counts": None,
        }
        prefer = "resolution=merge-duplicates,return=minimal"
        await self._send("POST", {}, body, prefer)

    async def finish(self, run_id: str, counts: Mapping[str, int]) -> None:
        """Record when the run finished and what it counted."""
        body = {"finished_at": self._clock().isoformat(), "counts": dict(counts)}
        await self._send("PATCH", {"id": f"eq.{run_id}"}, body, "return=minimal")

    async def _send(self, method: str, params: dict[str, str], body: dict[str, Any], prefer: str) -> None:
        if not self.enabled:
            return
        headers = {**self._headers, "Prefer": prefer}
        try:
            response = await self._up.request(
                method, self._url, params=params, content=json.dumps(body), headers=headers
            )
        except UpstreamError as exc:
            log.warning("run log: %s", exc)
            return
        if table_missing(response):
            self.enabled = False
            log.info(NOT_INSTALLED)
        elif not response.is_success:
            log.warning("run log: %s -> %d: %s", method, response.status_code, error_detail(response))
