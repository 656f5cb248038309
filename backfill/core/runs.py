"""A producer run as the optional run log records it: one `backfill_runs` row (`sql/002_backfill_runs.sql`).

The records' keys name the table's columns, so every backend (`backfill.core.ports.RunTable`) writes
them as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

TABLE = "backfill_runs"

RunRecord = dict[str, Any]


def start_record(run_id: str, mode: str, options: Mapping[str, Any], now: datetime) -> RunRecord:
    """The whole run row as a run starts."""
    return {
        "id": run_id,
        "started_at": now.isoformat(),
        "finished_at": None,
        "mode": mode,
        "options": dict(options),
        "counts": None,
    }


def finish_record(counts: Mapping[str, int], now: datetime) -> RunRecord:
    """The columns a finished run sets."""
    return {"finished_at": now.isoformat(), "counts": dict(counts)}
