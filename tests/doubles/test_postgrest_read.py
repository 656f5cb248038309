"""PostgrestDouble: auth, reads, the filter grammar, paging, the row cap and faults (docs/upstreams.md §3)."""

from __future__ import annotations

import httpx
import pytest

from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.serve import serve
from tests.doubles.postgrest_setup import HEADERS, KEY, ids, select


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"apikey": "wrong"},
        {"apikey": KEY, "Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {KEY}"},
    ],
    ids=["none", "wrong-apikey", "wrong-bearer", "bearer-only"],
)
async def test_bad_credentials_are_401_pgrst301(db: PostgrestDouble, headers: dict[str, str]) -> None:
    """apikey must be the service key, and a Bearer token, when sent, too."""
    async with serve(db.app()) as url, httpx.AsyncClient(base_url=url, headers=headers) as client:
        response = await client.get("/studio_board")
    assert response.status_code == 401
    assert response.json()["code"] == "PGRST301"
    assert set(response.json()) == {"code", "message", "details", "hint"}


async def test_apikey_alone_is_enough(db: PostgrestDouble) -> None:
    """New sb_secret_ keys go in apikey only: no Authorization header is fine."""
    async with serve(db.app()) as url, httpx.AsyncClient(base_url=url, headers={"apikey": KEY}) as client:
        assert (await client.get("/studio_board")).status_code == 200


async def test_unknown_table_is_404_pgrst205(db_http: httpx.AsyncClient) -> None:
    """A table that is not in the schema cache is 404 PGRST205."""
    response = await db_http.get("/publisher_rollup")
    assert response.status_code == 404
    assert response.json()["code"] == "PGRST205"
    assert "public.publisher_rollup" in response.json()["message"]


async def test_responses_are_capped_at_1000_rows(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """Supabase silently caps a response at 1000 rows, even when limit asks for more."""
    for index in range(1005):
        db.add_row(title=f"t{index}", status="published")
    assert len(await select(db_http)) == 1000
    assert len(await select(db_http, limit="5000")) == 1000
    assert len(await select(db_http, limit="7")) == 7


async def test_count_exact_gives_content_range(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """Prefer: count=exact adds `Content-Range: start-end/total` (206 for a partial page)."""
    for _ in range(30):
        db.add_row(status="published")
    response = await db_http.get("/studio_board", params={"limit": "25"}, headers={"Prefer": "count=exact"})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == "0-24/30"
    empty = await db_http.get(
        "/studio_board", params={"status": "eq.draft"}, headers={"Prefer": "count=exact"}
    )
    assert empty.headers["Content-Range"] == "*/0"
    assert empty.json() == []


async def test_keyset_paging_with_gt_and_order(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """id=gt.<last>&order=id.asc&limit=n walks the table page by page."""
    for _ in range(7):
        db.add_row(status="published")
    pages, last = [], 0
    while page := await select(db_http, id=f"gt.{last}", order="id.asc", limit="3"):
        pages.append(ids(page))
        last = page[-1]["id"]
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]
    assert ids(await select(db_http, order="id.desc", limit="2")) == [7, 6]


async def test_meta_key_is_null_matches_missing_key_and_json_null(
    db: PostgrestDouble, db_http: httpx.AsyncClient
) -> None:
    """meta->>k=is.null matches a missing key and a JSON null, not a value."""
    db.add_row(meta={})
    db.add_row(meta={"jellyfin_public_url": None})
    db.add_row(meta={"jellyfin_public_url": "https://jf/web/#/details?id=1"})
    assert ids(await select(db_http, **{"meta->>jellyfin_public_url": "is.null"})) == [1, 2]
    assert ids(await select(db_http, **{"meta->>jellyfin_public_url": "not.is.null"})) == [3]


async def test_filters_combine_like_the_plan_query(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """status=eq.published&meta->>key=is.null selects the plan's candidate rows."""
    db.add_row(status="published", meta={"title": "a"})
    db.add_row(status="draft", meta={})
    db.add_row(status="published", meta={"jellyfin_public_url": "x"})
    rows = await select(db_http, status="eq.published", **{"meta->>jellyfin_public_url": "is.null"})
    assert ids(rows) == [1]


async def test_neq_and_in_follow_sql_null_semantics(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """A NULL cell matches neither eq, neq, in nor their negations."""
    db.add_row(status="published")
    db.add_row(status=None)
    db.add_row(status="draft")
    assert ids(await select(db_http, status="neq.published")) == [3]
    assert ids(await select(db_http, status="in.(published,draft)")) == [1, 3]
    assert ids(await select(db_http, status="not.in.(published)")) == [3]
    assert ids(await select(db_http, status="is.null")) == [2]


async def test_select_returns_only_named_columns(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """select=a,b projects the rows; * (the default) returns every column."""
    db.add_row(title="x", status="published")
    assert await select(db_http, select="id,title") == [{"id": 1, "title": "x"}]
    assert set((await select(db_http))[0]) == {
        "id",
        "title",
        "namespace",
        "content_url",
        "status",
        "meta",
        "created_at",
    }


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"status": "like.pub*"}, "PGRST100"),
        ({"or": "(id.eq.1,id.eq.2)"}, "PGRST100"),
        ({"meta->jellyfin_item_id": "eq.x"}, "PGRST100"),
        ({"id": "is.banana"}, "PGRST100"),
        ({"order": "id.sideways"}, "PGRST100"),
        ({"limit": "ten"}, "PGRST100"),
        ({"nope": "eq.1"}, "42703"),
        ({"id": "gt.abc"}, "22P02"),
    ],
)
async def test_requests_outside_the_grammar_are_400(
    db_http: httpx.AsyncClient, params: dict[str, str], code: str
) -> None:
    """Filters, orders or values outside the supported subset are 400, so client bugs show."""
    response = await db_http.get("/studio_board", params=params)
    assert response.status_code == 400
    assert response.json()["code"] == code


async def test_fail_next_is_503_pgrst002(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """fail_next=N answers 503 PGRST002 (transient) N times."""
    db.fail_next = 1
    first = await db_http.get("/studio_board")
    second = await db_http.get("/studio_board")
    assert (first.status_code, first.json()["code"]) == (503, "PGRST002")
    assert second.status_code == 200


async def test_timeout_rate_is_504_pgrst003(db: PostgrestDouble, db_http: httpx.AsyncClient) -> None:
    """timeout_rate answers 504 PGRST003 (pool timeout)."""
    db.timeout_rate = 1.0
    response = await db_http.get("/studio_board")
    assert (response.status_code, response.json()["code"]) == (504, "PGRST003")
    assert db.injected["timeout"] == 1


async def test_base_path_serves_under_rest_v1() -> None:
    """base_path="/rest/v1" serves the Supabase CLI layout, and nothing at the root."""
    cli = PostgrestDouble(KEY, base_path="/rest/v1")
    cli.add_row(status="published")
    async with serve(cli.app()) as url, httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        assert (await client.get("/rest/v1/studio_board")).json()[0]["id"] == 1
        assert (await client.get("/studio_board")).status_code == 404
        rpc = await client.post("/rest/v1/rpc/backfill_merge_meta", json={"p_id": 1, "p_patch": {"a": 1}})
    assert rpc.json()[0]["meta"] == {"a": 1}


async def test_other_schema_profile_is_406(db_http: httpx.AsyncClient) -> None:
    """Accept-Profile selects a schema; only public is exposed."""
    response = await db_http.get("/studio_board", headers={"Accept-Profile": "private"})
    assert (response.status_code, response.json()["code"]) == (406, "PGRST106")
