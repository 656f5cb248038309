"""`producer verify` and what it reads, on every catalog backend: the rows a run republished, the YouTube
gaps `producer status` counts, and publisher-discord's metrics table (PostgREST and PostgreSQL alike).

The `producer verify` runs are the installed CLI as a subprocess, against the backend over loopback.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backfill.adapters.pgdiscord_metrics import PostgresMetricsTable
from backfill.adapters.postgrest_discord_metrics import PostgrestMetricsTable
from backfill.core.model import Row
from backfill.core.ports import MetricsTable
from backfill_doubles import discord_metrics
from backfill_doubles.postgres import execute
from tests.contract.conftest import KEY, Backend, PostgresBackend, PostgrestBackend
from tests.e2e.conftest import run_cli

RUN = "run-verify"
FULL = {
    "jellyfin_item_id": "a" * 32,
    "backfill_item_lacks": [],
    "jellyfin_public_url": "https://watch.example.org/web/#/details?id=x",
    "duration": 61.0,
    "thumbnail_url": "https://watch.example.org/Items/x/Images/Primary?tag=t",
}
ROWS: list[dict[str, Any]] = [
    {"id": 1, "status": "published", "meta": {**FULL, "backfill_run_id": RUN, "backfill_event_id": "ev-1"}},
    {
        "id": 2,
        "status": "published",
        "meta": {**FULL, "thumbnail_url": None, "backfill_run_id": RUN, "backfill_event_id": "ev-2"},
    },
    {"id": 3, "status": "published", "meta": {**FULL, "backfill_run_id": RUN, "backfill_event_id": "ev-3"}},
    {"id": 4, "status": "published", "meta": {**FULL, "backfill_run_id": RUN}},  # metadata-only
    {
        "id": 5,
        "status": "published",
        "meta": {**FULL, "backfill_run_id": "other", "backfill_event_id": "ev-5"},
    },
    {"id": 6, "status": "published", "meta": {"backfill_youtube_gap": {"result": "gave_up", "error": "502"}}},
    {"id": 7, "status": "published", "meta": {"backfill_youtube_gap": None}},  # cleared by a later run
]
DELIVERIES = [("ev-1", True), ("ev-2", False), ("ev-5", True), ("ev-unrelated", False)]


async def metrics_table(backend: Backend, deliveries: list[tuple[str, bool]]) -> MetricsTable:
    """The metrics table on this backend, created and holding `deliveries` (envelope id, success)."""
    records = [
        discord_metrics.metrics_record({"id": event, "topic": "content.published.v1"}, success)
        for event, success in deliveries
    ]
    if isinstance(backend, PostgrestBackend):
        backend.double.install_table(discord_metrics.POSTGREST_TABLE, "published_event_id").extend(records)
        return PostgrestMetricsTable(backend.http, backend.url, KEY, discord_metrics.NAME)
    assert isinstance(backend, PostgresBackend)
    await execute(backend.dsn, f"drop table if exists public.{discord_metrics.NAME}; {discord_metrics.DDL}")
    recorder = discord_metrics.PostgresRecorder(backend.dsn)
    try:
        for record in records:
            await recorder.record(record)
    finally:
        await recorder.aclose()
    return PostgresMetricsTable(backend.pooler_dsn or backend.dsn, discord_metrics.NAME)


def cli_env(backend: Backend, **extra: str) -> dict[str, str]:
    """The producer's settings for this backend; the other backend's variables blanked (= unset)."""
    if isinstance(backend, PostgrestBackend):
        env = {"SUPA_REST_URL": backend.url, "SUPABASE_SERVICE_ROLE_KEY": KEY, "CATALOG_DSN": ""}
    else:
        assert isinstance(backend, PostgresBackend)
        env = {
            "CATALOG_DSN": backend.pooler_dsn or backend.dsn,
            "CATALOG_POOL_MODE": "transaction" if backend.pooler_dsn else "session",
            "SUPA_REST_URL": "",
        }
    discord = dict.fromkeys(
        ("DISCORD_WEBHOOK_URL", "DISCORD_BOT_TOKEN", "DISCORD_CHANNEL_ID", "DISCORD_API_URL"), ""
    )
    return {
        **env,
        **discord,
        "SUPABASE_DB_URL": "",
        "DISCORD_METRICS_TABLE": "",
        "BACKFILL_LOG_FORMAT": "json",
        **extra,
    }


async def ids_of(pages: Any) -> list[list[int]]:
    return [[row.id for row in page] async for page in pages]


async def test_republished_rows_are_those_with_an_event_id_by_run_in_pages(backend: Backend) -> None:
    """With a run id only that run's rows with an event id; without, every row with one; keyset pages."""
    await backend.insert(ROWS)
    catalog = await backend.catalog(page_size=2)
    assert await ids_of(catalog.republished_rows(RUN)) == [[1, 2], [3]]
    assert await ids_of(catalog.republished_rows()) == [[1, 2], [3, 5]]
    assert await ids_of(catalog.republished_rows("no-such-run")) == []
    pages: list[list[Row]] = [page async for page in catalog.republished_rows(RUN)]
    assert pages[0][0].meta_dict["backfill_event_id"] == "ev-1"


async def test_youtube_gaps_count_rows_whose_gap_is_set(backend: Backend) -> None:
    """A gap set counts; a gap cleared (JSON null) or absent does not."""
    await backend.insert(ROWS)
    assert await (await backend.catalog()).count_youtube_gaps() == 1


async def test_metrics_records_by_event_id_and_none_for_a_missing_table(backend: Backend) -> None:
    table = await metrics_table(backend, DELIVERIES)
    found = await table.records(["ev-1", "ev-2", "ev-3"])
    assert found is not None
    assert sorted((r.published_event_id, r.webhook_success, r.channel) for r in found) == [
        ("ev-1", True, "discord"),
        ("ev-2", False, "discord"),
    ]
    assert all(r.published_at for r in found)
    assert await table.records([]) == []
    if isinstance(backend, PostgrestBackend):
        missing: MetricsTable = PostgrestMetricsTable(backend.http, backend.url, KEY, "no_such_metrics")
    else:
        assert isinstance(backend, PostgresBackend)
        missing = PostgresMetricsTable(backend.dsn, "no_such_metrics")
    assert await missing.records(["ev-1"]) is None


async def test_recorded_since_tells_whether_anything_was_recorded_from_a_moment_on(backend: Backend) -> None:
    table = await metrics_table(backend, DELIVERIES)
    assert await table.recorded_since(datetime.now(UTC) - timedelta(minutes=5))
    assert not await table.recorded_since(datetime.now(UTC) + timedelta(minutes=5))


async def test_verify_reports_delivered_failed_and_not_seen_for_a_run(backend: Backend) -> None:
    """One JSON document: ev-1 delivered, ev-2 failed (and missing its thumbnail), ev-3 not seen; rows of
    other runs and rows without an event left out; exit 1 because rows were not delivered."""
    await backend.insert(ROWS)
    await metrics_table(backend, DELIVERIES)
    ran = await run_cli("producer", ["verify", "--run-id", RUN, "--json"], cli_env(backend))
    assert ran.code == 1, ran.stderr
    report = json.loads(ran.stdout)
    states = {row["row_id"]: (row["event_id"], row["delivery"], row["embeds_seen"]) for row in report["rows"]}
    assert states == {
        1: ("ev-1", "delivered", None),
        2: ("ev-2", "failed", None),
        3: ("ev-3", "not_seen", None),
    }
    assert report["totals"] == {
        "rows": 3,
        "delivered": 1,
        "failed": 1,
        "not_seen": 1,
        "not_republished": 0,
        "duplicated": 0,
        "embed_complete": 2,
        "embed_complete_as_item_allows": 0,
        "embed_incomplete": 1,
        "missing_link": 0,
        "missing_duration": 0,
        "missing_jellyfin": 0,
        "missing_thumbnail": 1,
    }
    assert (report["source"], report["origin"], report["run_id"]) == ("metrics", discord_metrics.NAME, RUN)
    assert "reading publisher-discord's table publisher_discord_metrics" in ran.stderr
    assert report["recording"] is None  # the run's start is unknown: nothing to compare with


async def test_verify_by_ids_succeeds_when_nothing_failed_and_names_missing_rows(backend: Backend) -> None:
    """Text report; a row without an event is "not republished", an unknown id is listed; exit 0."""
    await backend.insert(ROWS)
    await metrics_table(backend, DELIVERIES)
    ran = await run_cli("producer", ["verify", "--ids", "1,4,99"], cli_env(backend))
    assert ran.code == 0, ran.stderr
    assert "2 rows: 1 delivered, 0 failed, 0 not seen, 1 not republished" in ran.stdout
    assert "not in the catalog: 99" in ran.stdout


async def test_nothing_recorded_since_the_run_began_is_told_apart_from_not_seen(backend: Backend) -> None:
    """The stock PMOVES state: the table exists (the shipped DDL) but publisher-discord records nothing.
    verify says so instead of a plain "not seen"; once it records (a record since the run began, even
    another event's), the same rows read as not seen yet."""
    run = "run-20261206T100000Z-a1b2c3"
    rows = [
        {
            "id": 11,
            "status": "published",
            "meta": {**FULL, "backfill_run_id": run, "backfill_event_id": "ev-11"},
        }
    ]
    await backend.insert(rows)
    await metrics_table(backend, [])
    stock = await run_cli("producer", ["verify", "--run-id", run, "--json"], cli_env(backend))
    assert stock.code == 1, stock.stderr
    report = json.loads(stock.stdout)
    assert (report["recording"], report["window_start"]) == (False, "2026-12-06T09:50:00+00:00")
    text = await run_cli("producer", ["verify", "--run-id", run], cli_env(backend))
    assert "has recorded nothing in publisher_discord_metrics since the run began" in text.stdout
    await metrics_table(backend, [("ev-other", True)])
    fixed = await run_cli("producer", ["verify", "--run-id", run, "--json"], cli_env(backend))
    assert json.loads(fixed.stdout)["recording"] is True
    assert [r["delivery"] for r in json.loads(fixed.stdout)["rows"]] == ["not_seen"]


async def test_verify_without_the_metrics_table_says_so_and_exits_4(backend: Backend) -> None:
    """Nothing on stdout, a notice naming the table and the setting on stderr."""
    await backend.insert(ROWS)
    ran = await run_cli(
        "producer",
        ["verify", "--run-id", RUN, "--json"],
        cli_env(backend, DISCORD_METRICS_TABLE="nope_metrics"),
    )
    assert ran.code == 4, ran.stderr
    assert ran.stdout == ""
    assert "'nope_metrics' does not exist" in ran.stderr and "DISCORD_METRICS_TABLE" in ran.stderr


@pytest.fixture(autouse=True)
async def _no_metrics_table_left(backend: Backend) -> Any:
    """Each test creates the table it needs; none inherits one from the test before."""
    if isinstance(backend, PostgresBackend):
        await execute(backend.dsn, f"drop table if exists public.{discord_metrics.NAME}")
    yield
