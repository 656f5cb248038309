"""Read `backfill_runs` back from PostgreSQL, jsonb columns decoded (run-log tests)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg


async def stored_runs(dsn: str) -> dict[str, dict[str, Any]]:
    """Every recorded run by id, `options` and `counts` as Python values (counts None until finished)."""
    conn = await asyncpg.connect(dsn)
    try:
        records = await conn.fetch("select * from public.backfill_runs")
    finally:
        await conn.close()
    runs = {}
    for record in records:
        row = dict(record.items())
        row["options"] = json.loads(row["options"])
        row["counts"] = None if row["counts"] is None else json.loads(row["counts"])
        runs[row["id"]] = row
    return runs
