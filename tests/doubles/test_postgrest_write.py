"""PostgrestDouble: PATCH replaces, optimistic pinning, and the merge RPC (docs/upstreams.md §3)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from backfill_doubles.postgrest import PostgrestDouble
from tests.doubles.postgrest_setup import REPRESENT, ids, select


async def test_patch_replaces_meta_whole(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """PATCH meta replaces the jsonb value: keys not in the patch are lost (no merge)."""
    db.add_row(meta={"publish_event_sent_at": "2025-01-01", "other_service": 1})
    response = await db_http.patch(
        "/studio_board", params={"id": "eq.1"}, json={"meta": {"jellyfin_item_id": "a"}}
    )
    assert response.status_code == 204
    assert response.content == b""
    assert db.rows[1]["meta"] == {"jellyfin_item_id": "a"}


async def test_patch_representation_is_empty_array_when_nothing_matched(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    """Prefer: return=representation gives 200 with the updated rows, [] when none matched."""
    db.add_row(status="published")
    hit = await db_http.patch(
        "/studio_board", params={"id": "eq.1"}, json={"status": "approved"}, headers=REPRESENT
    )
    miss = await db_http.patch(
        "/studio_board", params={"id": "eq.99"}, json={"status": "approved"}, headers=REPRESENT
    )
    assert (hit.status_code, miss.status_code) == (200, 200)
    assert hit.json()[0]["status"] == "approved"
    assert miss.json() == []


async def test_patch_without_a_filter_is_refused(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """An unfiltered PATCH would update every row: it is refused (safeupdate)."""
    db.add_row(status="published")
    response = await db_http.patch("/studio_board", json={"status": "draft"})
    assert response.status_code == 400
    assert db.rows[1]["status"] == "published"


async def test_meta_eq_json_pins_an_optimistic_update(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    """meta=eq.<json> matches only the exact jsonb value, so a stale writer updates nothing."""
    db.add_row(meta={"a": 1, "b": [1, 2]})
    new_meta = {"a": 1, "b": [1, 2], "c": True}
    stale = {"id": "eq.1", "meta": "eq." + json.dumps({"a": 2})}
    fresh = {"id": "eq.1", "meta": "eq." + json.dumps({"b": [1, 2], "a": 1})}
    lost = await db_http.patch("/studio_board", params=stale, json={"meta": new_meta}, headers=REPRESENT)
    won = await db_http.patch("/studio_board", params=fresh, json={"meta": new_meta}, headers=REPRESENT)
    assert lost.json() == []
    assert won.json()[0]["meta"] == new_meta


async def test_before_write_hook_makes_an_optimistic_writer_lose(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    """A row changed under a pinned PATCH (via before_write) is rechecked and left alone."""
    db.add_row(meta={"a": 1})

    def other_writer(row_id: int) -> None:
        db.rows[row_id]["meta"] = {"a": 1, "someone_else": True}

    db.before_write = other_writer
    params = {"id": "eq.1", "meta": "eq." + json.dumps({"a": 1})}
    response = await db_http.patch(
        "/studio_board", params=params, json={"meta": {"a": 1, "mine": 1}}, headers=REPRESENT
    )
    assert response.json() == []
    assert db.rows[1]["meta"] == {"a": 1, "someone_else": True}
    assert db.calls["patch"] == 1


async def test_rows_come_back_in_heap_order_without_order(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    """Without order= there is no promised order: an updated row moves to the end, as in PostgreSQL."""
    for _ in range(3):
        db.add_row(status="published")
    await db_http.patch("/studio_board", params={"id": "eq.1"}, json={"status": "published"})
    assert ids(await select(db_http)) == [2, 3, 1]


async def test_rpc_merge_keeps_other_keys_and_defaults_fill_only_missing(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    """backfill_merge_meta: defaults || meta || patch; other keys survive, defaults never overwrite."""
    db.add_row(meta={"publish_event_sent_at": "2025-01-01", "other": 1, "duration": 3})
    args = {
        "p_id": 1,
        "p_patch": {"duration": 12.5},
        "p_defaults": {"publish_event_sent_at": "new", "slug": "s"},
    }
    response = await db_http.post("/rpc/backfill_merge_meta", json=args)
    assert response.status_code == 200
    expected = {"publish_event_sent_at": "2025-01-01", "other": 1, "duration": 12.5, "slug": "s"}
    assert response.json()[0]["meta"] == expected
    assert db.rows[1]["meta"] == expected
    assert db.calls["rpc"] == 1


async def test_rpc_on_a_missing_row_returns_an_empty_array(db_http: httpx.AsyncClient) -> None:
    """A setof function with no row for p_id returns []."""
    response = await db_http.post("/rpc/backfill_merge_meta", json={"p_id": 404, "p_patch": {"a": 1}})
    assert (response.status_code, response.json()) == (200, [])


async def test_rpc_not_installed_is_404_pgrst202(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """Without the SQL function the RPC is 404 PGRST202 (fall back to an optimistic PATCH)."""
    db.rpc_installed = False
    response = await db_http.post("/rpc/backfill_merge_meta", json={"p_id": 1, "p_patch": {}})
    assert response.status_code == 404
    function = "public.backfill_merge_meta"
    assert response.json() == {
        "code": "PGRST202",
        "message": f"Could not find the function {function}(p_id, p_patch) in the schema cache",
        "details": f"Searched for the function {function} with parameters p_id, p_patch or with a "
        "single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
        "hint": None,
    }


@pytest.mark.parametrize(
    ("function", "args"),
    [("other_fn", {"p_id": 1, "p_patch": {}}), ("backfill_merge_meta", {"id": 1, "patch": {}})],
    ids=["unknown-function", "wrong-argument-names"],
)
async def test_unknown_function_or_arguments_is_404_pgrst202(
    db_http: httpx.AsyncClient, function: str, args: dict[str, Any]
) -> None:
    """RPC arguments are matched by name: another function or other names is PGRST202."""
    response = await db_http.post(f"/rpc/{function}", json=args)
    assert response.status_code == 404
    assert response.json()["code"] == "PGRST202"
