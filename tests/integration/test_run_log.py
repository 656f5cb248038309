"""The optional run log (`backfill_runs`): one record shape and one failure policy, written through
PostgREST (a table-generic stand-in, and the project's PostgREST double) or straight into a real
PostgreSQL (embedded) when the catalog is a DSN."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from backfill.adapters.pgruns import PostgresRunTable
from backfill.adapters.postgrest_runs import PostgrestRunTable
from backfill.adapters.transport import HttpClient
from backfill_doubles.natsserver import free_port
from backfill_doubles.postgres import EmbeddedPostgres, execute
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.serve import serve
from producer.runs import NOT_INSTALLED, RunLog
from tests.support.runs import stored_runs

REPO = Path(__file__).resolve().parents[2]
RUNS_SQL = REPO / "sql" / "002_backfill_runs.sql"
KEY = "service-role-key"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(minutes=7)


# --- through PostgREST ----------------------------------------------------------------------------


class RunsTable:
    """A PostgREST stand-in for one generic table: upsert by POST, update by PATCH `?id=eq.`."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, str], dict[str, str], Any]] = []
        self.missing_code: str | None = None  # answer 404 with this code, as for a missing table
        self.fail_status: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/backfill_runs", self._handle)
        app.router.add_patch("/backfill_runs", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.method, dict(request.query), dict(request.headers), body))
        if self.missing_code:
            return web.json_response({"code": self.missing_code, "message": "no table"}, status=404)
        if self.fail_status:
            return web.json_response({"code": "XX000", "message": "boom"}, status=self.fail_status)
        if request.method == "POST":
            self.rows[body["id"]] = body
        else:
            run_id = request.query["id"].removeprefix("eq.")
            if run_id in self.rows:
                self.rows[run_id].update(body)
        return web.Response(status=201 if request.method == "POST" else 204)


@pytest.fixture
async def runs_table() -> AsyncIterator[tuple[RunsTable, str]]:
    table = RunsTable()
    async with serve(table.app()) as url:
        yield table, url


async def test_run_log_upserts_the_start_and_patches_the_finish(
    runs_table: tuple[RunsTable, str], http: HttpClient
) -> None:
    """start() upserts the run row with merge-duplicates; finish() patches ?id=eq.<run>."""
    table, url = runs_table
    runs = RunLog(PostgrestRunTable(http, url, KEY), clock=lambda: NOW)
    await runs.start("run-1", "republish", {"limit": 25})
    await runs.finish("run-1", {"enqueued": 3})
    (post, patch) = table.requests
    assert "resolution=merge-duplicates" in post[2]["Prefer"]
    assert post[2]["apikey"] == KEY
    assert patch[:2] == ("PATCH", {"id": "eq.run-1"})
    assert table.rows["run-1"] == {
        "id": "run-1",
        "started_at": NOW.isoformat(),
        "finished_at": NOW.isoformat(),
        "mode": "republish",
        "options": {"limit": 25},
        "counts": {"enqueued": 3},
    }


@pytest.mark.parametrize("code", ["PGRST205", "42P01"])
async def test_run_log_gives_one_notice_and_stops_when_the_table_is_missing(
    runs_table: tuple[RunsTable, str], http: HttpClient, caplog: pytest.LogCaptureFixture, code: str
) -> None:
    """A missing table logs the notice once and no later call reaches the server."""
    table, url = runs_table
    table.missing_code = code
    runs = RunLog(PostgrestRunTable(http, url, KEY))
    with caplog.at_level(logging.INFO, logger="producer"):
        await runs.start("run-1", "republish", {})
        await runs.finish("run-1", {"enqueued": 1})
    assert [r.getMessage() for r in caplog.records] == [NOT_INSTALLED]
    assert len(table.requests) == 1
    assert runs.enabled is False


async def test_run_log_recognises_the_postgrest_doubles_missing_table_answer(
    http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The PostgREST double (studio_board only) answers backfill_runs as missing, POST and PATCH alike
    (404 PGRST205, as PostgREST does): one notice, no warning."""
    double = PostgrestDouble(KEY)
    async with serve(double.app()) as url:
        runs = RunLog(PostgrestRunTable(http, url, KEY))
        patch_only = RunLog(PostgrestRunTable(http, url, KEY))
        with caplog.at_level(logging.INFO, logger="producer"):
            await runs.start("run-1", "republish", {})
            await runs.finish("run-1", {"enqueued": 1})
            await patch_only.finish("run-2", {"enqueued": 1})
    assert [r.getMessage() for r in caplog.records] == [NOT_INSTALLED, NOT_INSTALLED]
    assert runs.enabled is False and patch_only.enabled is False


async def test_run_log_warns_on_other_errors_and_keeps_trying(
    runs_table: tuple[RunsTable, str], http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500 is a warning, not an exception, and the next call is still sent."""
    table, url = runs_table
    table.fail_status = 500
    runs = RunLog(PostgrestRunTable(http, url, KEY))
    with caplog.at_level(logging.INFO, logger="producer"):
        await runs.start("run-1", "republish", {})
        await runs.finish("run-1", {})
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert len(table.requests) == 2
    assert runs.enabled is True


async def test_run_log_warns_when_postgrest_is_unreachable(
    http: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A connection failure is a warning, never an exception."""
    runs = RunLog(PostgrestRunTable(http, f"http://127.0.0.1:{free_port()}", KEY))
    with caplog.at_level(logging.INFO, logger="producer"):
        await runs.start("run-1", "republish", {})
    assert [r.levelname for r in caplog.records] == ["WARNING"]


# --- straight into PostgreSQL ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    with EmbeddedPostgres() as server:
        yield server.dsn


@pytest.fixture
async def no_runs_table(postgres_dsn: str) -> str:
    """The database without `backfill_runs` (an operator who never installed it)."""
    await execute(postgres_dsn, "drop table if exists public.backfill_runs")
    return postgres_dsn


@pytest.fixture
async def runs_dsn(no_runs_table: str) -> str:
    """The database with `sql/002_backfill_runs.sql` freshly installed."""
    await execute(no_runs_table, RUNS_SQL.read_text())
    return no_runs_table


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


OPTIONS = {"ids": None, "limit": 25, "since_id": 100, "mode": "metadata-only"}
COUNTS = {"candidates": 25, "enqueued": 23, "already_pending": 2, "failed": 0}


async def test_postgres_run_log_writes_the_run_with_its_options_then_its_counts(runs_dsn: str) -> None:
    """start() inserts id, started_at, mode and options with no finish yet; finish() adds counts and time."""
    clock = Clock(NOW)
    runs = RunLog(PostgresRunTable(runs_dsn), clock=clock)
    await runs.start("run-1", "metadata-only", OPTIONS)
    started = (await stored_runs(runs_dsn))["run-1"]
    assert started == {
        "id": "run-1",
        "started_at": NOW,
        "finished_at": None,
        "mode": "metadata-only",
        "options": OPTIONS,
        "counts": None,
    }
    clock.now = LATER
    await runs.finish("run-1", COUNTS)
    assert (await stored_runs(runs_dsn))["run-1"] == {**started, "finished_at": LATER, "counts": COUNTS}
    assert runs.enabled is True


async def test_postgres_run_log_restarting_a_run_id_starts_it_afresh(runs_dsn: str) -> None:
    """The same id again (a re-run with --run-id) replaces the start and clears the old finish."""
    clock = Clock(NOW)
    runs = RunLog(PostgresRunTable(runs_dsn), clock=clock)
    await runs.start("run-1", "republish", {"limit": 1})
    await runs.finish("run-1", {"enqueued": 1})
    await runs.start("run-2", "republish", {})
    clock.now = LATER
    await runs.start("run-1", "metadata-only", OPTIONS)
    stored = await stored_runs(runs_dsn)
    assert stored["run-1"] == {
        "id": "run-1",
        "started_at": LATER,
        "finished_at": None,
        "mode": "metadata-only",
        "options": OPTIONS,
        "counts": None,
    }
    assert set(stored) == {"run-1", "run-2"}


async def test_both_backends_record_the_same_run(
    runs_dsn: str, runs_table: tuple[RunsTable, str], http: HttpClient
) -> None:
    """What PostgREST is sent and what PostgreSQL stores are the same record, column for column."""
    table, url = runs_table
    for run_table in (PostgrestRunTable(http, url, KEY), PostgresRunTable(runs_dsn)):
        runs = RunLog(run_table, clock=lambda: NOW)
        await runs.start("run-1", "republish", OPTIONS)
        await runs.finish("run-1", COUNTS)
    stored = (await stored_runs(runs_dsn))["run-1"]
    sent = table.rows["run-1"]
    assert set(sent) == set(stored)
    assert {k: v.isoformat() if isinstance(v, datetime) else v for k, v in stored.items()} == sent


async def test_postgres_run_log_gives_one_notice_and_stops_when_the_table_is_missing(
    no_runs_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No backfill_runs table: the notice PostgREST users get, once; nothing raises; later calls skip."""
    runs = RunLog(PostgresRunTable(no_runs_table))
    with caplog.at_level(logging.INFO, logger="producer"):
        await runs.start("run-1", "republish", {})
        await runs.finish("run-1", {"enqueued": 1})
        await runs.start("run-2", "republish", {})
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("INFO", NOT_INSTALLED)]
    assert runs.enabled is False


async def test_postgres_run_log_warns_on_other_errors_and_keeps_trying(
    runs_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A role without rights on the table (42501): a warning per call, never an exception, not disabled."""
    await execute(
        runs_dsn, "drop role if exists backfill_runs_reader; create role backfill_runs_reader login"
    )
    try:
        reader = runs_dsn.replace("postgresql://postgres@", "postgresql://backfill_runs_reader@")
        runs = RunLog(PostgresRunTable(reader))
        with caplog.at_level(logging.INFO, logger="producer"):
            await runs.start("run-1", "republish", {})
            await runs.finish("run-1", {})
    finally:
        await execute(runs_dsn, "drop role backfill_runs_reader")
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert all("42501" in r.getMessage() for r in caplog.records)
    assert runs.enabled is True
    assert await stored_runs(runs_dsn) == {}


async def test_postgres_run_log_warns_when_the_database_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listening: a warning that never shows the DSN's password."""
    dsn = f"postgresql://backfill:s3cr3t-pw@127.0.0.1:{free_port()}/postgres"
    runs = RunLog(PostgresRunTable(dsn, timeout=5))
    with caplog.at_level(logging.INFO, logger="producer"):
        await runs.start("run-1", "republish", {})
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "s3cr3t-pw" not in caplog.text


async def test_runs_sql_installs_and_stores_what_the_run_log_sends(
    postgres_dsn: str, runs_table: tuple[RunsTable, str], http: HttpClient
) -> None:
    """The shipped SQL installs twice, and takes RunLog's POST and PATCH bodies as PostgREST would."""
    await execute(postgres_dsn, RUNS_SQL.read_text())
    await execute(postgres_dsn, RUNS_SQL.read_text())
    table, url = runs_table
    runs = RunLog(PostgrestRunTable(http, url, KEY), clock=lambda: NOW)
    await runs.start("run-9", "metadata-only", {"ids": [1, 2]})
    await runs.finish("run-9", {"enqueued": 2})
    (_, _, _, start), (_, _, _, finish) = table.requests
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(
            "insert into public.backfill_runs"
            " select * from jsonb_populate_record(null::public.backfill_runs, $1::jsonb)",
            json.dumps(start),
        )
        await conn.execute(
            "update public.backfill_runs set (finished_at, counts) ="
            " (select finished_at, counts from jsonb_populate_record(null::public.backfill_runs, $2::jsonb))"
            " where id = $1",
            "run-9",
            json.dumps(finish),
        )
        row = await conn.fetchrow("select * from public.backfill_runs where id = 'run-9'")
    finally:
        await conn.close()
    assert row is not None
    assert (row["started_at"], row["finished_at"], row["mode"]) == (NOW, NOW, "metadata-only")
    assert (json.loads(row["options"]), json.loads(row["counts"])) == ({"ids": [1, 2]}, {"enqueued": 2})
