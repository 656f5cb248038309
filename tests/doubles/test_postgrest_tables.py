"""Tables besides studio_board in the PostgREST double: missing until installed, then read with the same
grammar and written by upserts (publisher-discord's metrics table, docs/upstreams.md §8)."""

from __future__ import annotations

import httpx

from backfill_doubles.discord_metrics import NAME, POSTGREST_TABLE, metrics_record
from backfill_doubles.postgrest import PostgrestDouble

UPSERT = {"Prefer": "resolution=merge-duplicates,return=minimal"}


def record(event: str, success: bool) -> dict[str, object]:
    return {"published_event_id": event, "event_topic": "content.published.v1", "webhook_success": success}


async def test_a_table_not_installed_is_missing_for_reads_and_writes(db_http: httpx.AsyncClient) -> None:
    """404 PGRST205, as PostgREST answers for a table that does not exist."""
    for response in (
        await db_http.get(f"/{NAME}", params={"select": "published_event_id"}),
        await db_http.post(f"/{NAME}", json=record("e1", True)),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "PGRST205"


async def test_an_installed_table_is_selected_with_filters_and_upserted(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    rows = db.install_table(POSTGREST_TABLE, "published_event_id")
    assert (await db_http.post(f"/{NAME}", json=record("e1", False), headers=UPSERT)).status_code == 201
    both = [record("e1", True), record("e2", False)]
    assert (await db_http.post(f"/{NAME}", json=both, headers=UPSERT)).status_code == 201
    assert [(r["published_event_id"], r["webhook_success"]) for r in rows] == [("e1", True), ("e2", False)]
    found = await db_http.get(
        f"/{NAME}",
        params={"select": "published_event_id,webhook_success", "published_event_id": 'in.("e2","e9")'},
    )
    assert found.json() == [{"published_event_id": "e2", "webhook_success": False}]
    failed = await db_http.get(
        f"/{NAME}", params={"select": "published_event_id", "webhook_success": "eq.false"}
    )
    assert failed.json() == [{"published_event_id": "e2"}]
    assert (await db_http.get(f"/{NAME}", params={"limit": "0"})).json() == []


async def test_a_duplicate_without_merge_and_an_unknown_column_are_refused(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    db.install_table(POSTGREST_TABLE, "published_event_id")
    assert (await db_http.post(f"/{NAME}", json=record("e1", True))).status_code == 201
    duplicate = await db_http.post(f"/{NAME}", json=record("e1", False))
    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "23505")
    unknown = await db_http.post(f"/{NAME}", json={**record("e3", True), "colour": "red"}, headers=UPSERT)
    assert (unknown.status_code, unknown.json()["code"]) == (400, "PGRST204")
    bad_column = await db_http.get(f"/{NAME}", params={"select": "meta"})
    assert (bad_column.status_code, bad_column.json()["code"]) == (400, "42703")


async def test_an_upsert_on_a_column_without_a_unique_constraint_is_42p10(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    """publisher-discord upserts with on_conflict=published_event_id: on a table made without the
    UNIQUE constraint (as by hand, PMOVES shipping no DDL) every record is refused; with it, it merges."""
    rows = db.install_table(POSTGREST_TABLE, None)
    conflict = {"on_conflict": "published_event_id"}
    refused = await db_http.post(f"/{NAME}", params=conflict, json=record("e1", True), headers=UPSERT)
    assert (refused.status_code, refused.json()["code"]) == (400, "42P10")
    assert rows == []
    rows = db.install_table(POSTGREST_TABLE, "published_event_id")
    for success in (False, True):
        answer = await db_http.post(f"/{NAME}", params=conflict, json=record("e1", success), headers=UPSERT)
        assert answer.status_code == 201
    assert [(r["published_event_id"], r["webhook_success"]) for r in rows] == [("e1", True)]


async def test_the_publisher_discord_double_records_the_row_shape_it_writes(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    """Every column publisher-discord sends exists in the shipped table's shape (else PGRST204)."""
    db.install_table(POSTGREST_TABLE, "published_event_id")
    envelope = {"id": "e1", "topic": "content.published.v1", "payload": {"title": "Night Drive", "tags": []}}
    answer = await db_http.post(f"/{NAME}", json=metrics_record(envelope, True), headers=UPSERT)
    assert answer.status_code == 201
    stored = db.tables[NAME][2][0]
    assert (stored["slug"], stored["namespace"], stored["artifact_uri"]) == (
        "night-drive",
        "pmoves",
        "discord::e1",
    )
