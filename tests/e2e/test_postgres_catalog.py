"""The producer on a catalog reached through `CATALOG_DSN` (a real embedded PostgreSQL): the run log
in `backfill_runs` when installed, one notice when not, and `status` counting rows from the database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill_doubles.postgres import execute
from backfill_doubles.stack import EmbeddedStack, StackOptions
from producer.runs import NOT_INSTALLED
from tests.e2e.conftest import run_cli
from tests.e2e.processes import WorkerProcess
from tests.support.runs import stored_runs

pytestmark = pytest.mark.slow
RUNS_SQL = Path(__file__).resolve().parents[2] / "sql" / "002_backfill_runs.sql"


@pytest.fixture
def pg_stack(nats_url: str, contracts_dir: Path) -> Iterator[EmbeddedStack]:
    options = StackOptions(size=80, nats_url=nats_url, contracts_dir=contracts_dir, catalog="postgres")
    with EmbeddedStack(options) as embedded:
        yield embedded


def enriched(rows: list[dict[str, Any]], run_id: str | None = None) -> int:
    return sum(
        1
        for row in rows
        if row["status"] == "published"
        and (row["meta"] or {}).get("jellyfin_public_url") is not None
        and (run_id is None or (row["meta"] or {}).get("backfill_run_id") == run_id)
    )


async def test_without_backfill_runs_the_enqueue_says_so_once_and_succeeds(
    pg_stack: EmbeddedStack, layout_env: dict
) -> None:
    """No table: one notice on stderr, exit 0, every selected row enqueued."""
    ran = await run_cli(
        "producer", ["enqueue", "--all-missing", "--limit", "10", "--json"], pg_stack.env(**layout_env)
    )
    assert ran.code == 0, ran.stderr
    assert ran.stderr.count(NOT_INSTALLED) == 1
    assert '"level": "warning"' not in ran.stderr
    summary = ran.json_lines()[-1]
    assert (summary["enqueued"], summary["failed"]) == (10, 0)


async def test_with_backfill_runs_the_run_is_recorded_and_status_counts_what_it_enriched(
    pg_stack: EmbeddedStack, layout_env: dict
) -> None:
    """The run row holds mode, options and the summary's counts; after the workers ran, status counts
    the enriched rows (before + this run's) against the rows still missing, from PostgreSQL."""
    dsn = pg_stack.postgres_dsn
    assert dsn is not None
    await execute(dsn, RUNS_SQL.read_text())
    env = pg_stack.env(**layout_env)
    args = ["enqueue", "--all-missing", "--mode", "metadata-only", "--limit", "15", "--since-id", "3"]
    ran = await run_cli("producer", [*args, "--run-id", "run-pg", "--json"], env)
    assert ran.code == 0, ran.stderr
    assert NOT_INSTALLED not in ran.stderr
    summary = ran.json_lines()[-1]
    run = (await stored_runs(dsn))["run-pg"]
    assert run["mode"] == "metadata-only"
    assert run["options"] == {"ids": None, "limit": 15, "since_id": 3, "mode": "metadata-only"}
    assert run["counts"] == {k: v for k, v in summary.items() if isinstance(v, int)}
    assert run["counts"]["enqueued"] == 15
    assert run["started_at"] <= run["finished_at"]

    before = await pg_stack.current_rows()
    published = sum(1 for row in before if row["status"] == "published")
    assert await (await WorkerProcess(env, "--exit-when-idle", "2").start()).wait() == 0
    after = await pg_stack.current_rows()
    by_run = enriched(after, "run-pg")
    assert by_run >= 5
    status = await run_cli("producer", ["status", "--json", "--sample", "0.2"], env)
    assert status.code == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["rows_enriched"] == enriched(before) + by_run == enriched(after)
    assert data["rows_missing"] == published - data["rows_enriched"]
