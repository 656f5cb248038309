"""`sql/001_backfill_merge_meta.sql`, the functions operators install for PostgREST, on a real PostgreSQL.

They install cleanly (again and again, with or without Supabase's `service_role`), merge as the header
documents, are atomic under concurrent calls (overlapping batches never deadlock), the batched one
refuses what it cannot apply faithfully, and the PostgREST double's RPCs answer exactly like them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from backfill.core.catalog import merged_meta
from backfill.core.payload import MetaPatch
from backfill_doubles.postgres import insert_rows, install_merge_function
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.serve import serve

SIGNATURE = "public.backfill_merge_meta(bigint,jsonb,jsonb)"
MANY_SIGNATURE = "public.backfill_merge_meta_many(jsonb)"
DROP_SERVICE_ROLE = f"""
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        revoke all on function {SIGNATURE} from service_role;
        revoke all on function {MANY_SIGNATURE} from service_role;
        drop role service_role;
    end if;
end
$$;
"""


# a row with keys to overwrite, fill and keep, and a row whose meta is SQL null
TWO_ROWS = [
    {"title": "t", "status": "published", "meta": {"a": 0, "b": 0, "c": 3}},
    {"status": "published", "meta": None},
]


@pytest.fixture
async def conn(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_dsn)
    await connection.execute("truncate public.studio_board restart identity")
    await connection.execute("create role backfill_outsider nologin")
    try:
        yield connection
    finally:
        await connection.execute("drop role backfill_outsider")
        await connection.execute(DROP_SERVICE_ROLE)
        await install_merge_function(postgres_dsn)  # as the session installed it
        await connection.close()


async def merge(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    records = await conn.fetch(f"select * from {sql}", *args)
    return [{**dict(record.items()), "meta": json.loads(record["meta"] or "null")} for record in records]


async def can_execute(conn: asyncpg.Connection, role: str, signature: str = SIGNATURE) -> bool:
    return bool(await conn.fetchval("select has_function_privilege($1, $2, 'execute')", role, signature))


def items(*entries: tuple[int | None, Any, Any]) -> str:
    """`p_items` for backfill_merge_meta_many: (id, patch, defaults) per row, as JSON text."""
    return json.dumps([{"id": i, "patch": p, "defaults": d} for i, p, d in entries])


async def test_installs_and_reinstalls_cleanly_without_a_service_role(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    """A plain PostgreSQL (no Supabase roles): the script runs twice and nobody else may call it."""
    await conn.execute(DROP_SERVICE_ROLE)
    await install_merge_function(postgres_dsn)
    await install_merge_function(postgres_dsn)
    for signature in (SIGNATURE, MANY_SIGNATURE):
        assert await conn.fetchval("select to_regprocedure($1) is not null", signature)
        assert not await can_execute(conn, "backfill_outsider", signature)


async def test_grants_execute_to_service_role_and_to_no_other_role(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    """On Supabase the service role may call the function; public execute is revoked."""
    await conn.execute(DROP_SERVICE_ROLE)
    await conn.execute("create role service_role nologin")
    await install_merge_function(postgres_dsn)
    for signature in (SIGNATURE, MANY_SIGNATURE):
        assert await can_execute(conn, "service_role", signature)
        assert not await can_execute(conn, "backfill_outsider", signature)


async def test_merges_as_documented_and_returns_the_whole_row(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    """`backfill_merge_meta(id, '{"a":1}', '{"b":2}')`: a overwrites, b only fills in, c survives."""
    await insert_rows(postgres_dsn, [*TWO_ROWS, {"status": "published", "meta": {"c": 3}}])
    call = """backfill_merge_meta($1, '{"a":1}', '{"b":2}')"""
    [first] = await merge(conn, call, 1)
    assert first["meta"] == {"a": 1, "b": 0, "c": 3}
    assert set(first) == {"id", "title", "namespace", "content_url", "status", "meta", "created_at"}
    assert (first["id"], first["title"], first["status"]) == (1, "t", "published")
    assert (await merge(conn, call, 2))[0]["meta"] == {"a": 1, "b": 2}
    assert (await merge(conn, call, 3))[0]["meta"] == {"a": 1, "b": 2, "c": 3}
    assert await merge(conn, call, 999) == []


async def test_defaults_are_optional_and_null_arguments_change_nothing(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    """`p_defaults` has a default; a null patch or null defaults leave meta as it was."""
    await insert_rows(postgres_dsn, [{"status": "published", "meta": {"keep": 1}}])
    assert (await merge(conn, """backfill_merge_meta(1, '{"x":1}')"""))[0]["meta"] == {"keep": 1, "x": 1}
    assert (await merge(conn, "backfill_merge_meta(1, null, null)"))[0]["meta"] == {"keep": 1, "x": 1}


async def test_concurrent_calls_on_one_row_lose_no_key(postgres_dsn: str, conn: asyncpg.Connection) -> None:
    """20 calls from 10 connections, each adding its own key: the row lock serialises them."""
    await insert_rows(postgres_dsn, [{"status": "published", "meta": {"origin": True}}])
    async with asyncpg.create_pool(postgres_dsn, min_size=10, max_size=10) as pool:
        await asyncio.gather(
            *(
                pool.execute("select backfill_merge_meta(1, $1::jsonb)", json.dumps({f"k{i}": i}))
                for i in range(20)
            )
        )
    meta = json.loads(await conn.fetchval("select meta from public.studio_board where id = 1"))
    assert meta == {"origin": True, **{f"k{i}": i for i in range(20)}}


async def test_the_batched_merge_applies_each_item_to_its_own_row_and_skips_missing_ids(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    """One call, three rows and one id that does not exist: each row gets its own patch and defaults."""
    await insert_rows(postgres_dsn, [*TWO_ROWS, {"status": "published", "meta": {"keep": True}}])
    p_items = items((3, None, {"d": 4}), (1, {"a": 1}, {"b": 2}), (999, {"a": 9}, {}), (2, {"x": 1}, None))
    merged = {row["id"]: row for row in await merge(conn, "backfill_merge_meta_many($1::jsonb)", p_items)}
    assert set(merged) == {1, 2, 3}
    assert merged[1]["meta"] == {"a": 1, "b": 0, "c": 3}
    assert merged[2]["meta"] == {"x": 1}
    assert merged[3]["meta"] == {"keep": True, "d": 4}
    assert set(merged[1]) == {"id", "title", "namespace", "content_url", "status", "meta", "created_at"}
    assert await merge(conn, "backfill_merge_meta_many('[]'::jsonb)") == []


async def test_both_functions_leave_a_meta_that_is_not_an_object_alone(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    """`'{}' || '[1]'` is an array: rather than append to it, the functions skip the row (no row back)."""
    await insert_rows(
        postgres_dsn, [{"status": "published", "meta": [1]}, {"status": "published", "meta": "s"}]
    )
    assert await merge(conn, """backfill_merge_meta(1, '{"a":1}')""") == []
    assert (
        await merge(conn, "backfill_merge_meta_many($1::jsonb)", items((1, {"a": 1}, {}), (2, {"a": 1}, {})))
        == []
    )
    metas = await conn.fetch("select meta from public.studio_board order by id")
    assert [json.loads(m["meta"]) for m in metas] == [[1], "s"]


@pytest.mark.parametrize(
    ("p_items", "message"),
    [
        pytest.param(items((1, {"a": 1}, {}), (1, {"b": 2}, {})), "more than once", id="duplicate-id"),
        pytest.param(items((None, {"a": 1}, {})), "needs an", id="missing-id"),
        pytest.param('{"id": 1}', "must be a JSON array", id="not-an-array"),
        pytest.param("[1, 2]", "must be a JSON object", id="not-objects"),
        pytest.param(None, "must be a JSON array", id="null"),
    ],
)
async def test_the_batched_merge_refuses_what_it_cannot_apply_faithfully(
    conn: asyncpg.Connection, postgres_dsn: str, p_items: str | None, message: str
) -> None:
    """A row named twice would keep one patch at random: the call fails (22023) and changes nothing."""
    await insert_rows(postgres_dsn, [{"status": "published", "meta": {"keep": 1}}])
    with pytest.raises(asyncpg.InvalidParameterValueError, match=message):
        await merge(conn, "backfill_merge_meta_many($1::jsonb)", p_items)
    assert json.loads(await conn.fetchval("select meta from public.studio_board where id = 1")) == {"keep": 1}


async def test_overlapping_batches_in_opposite_orders_neither_deadlock_nor_lose_a_key(
    postgres_dsn: str, conn: asyncpg.Connection
) -> None:
    """Batches over the same 50 rows, half of them listed backwards, from 8 connections at once."""
    await insert_rows(postgres_dsn, [{"status": "published", "meta": {"origin": True}} for _ in range(50)])
    ids = list(range(1, 51))

    def batch(n: int) -> str:
        ordered = ids if n % 2 else ids[::-1]
        return items(*((i, {f"k{n}": n}, {}) for i in ordered))

    async with asyncpg.create_pool(postgres_dsn, min_size=8, max_size=8) as pool:
        await asyncio.gather(
            *(pool.execute("select backfill_merge_meta_many($1::jsonb)", batch(n)) for n in range(16))
        )
    metas = [
        json.loads(m) for m in await conn.fetchval("select array_agg(meta order by id) from studio_board")
    ]
    assert metas == [{"origin": True, **{f"k{n}": n for n in range(16)}}] * 50


CASES = [
    pytest.param({"a": 0, "b": 0}, {"a": 1}, {"b": 2}, id="overwrite-and-fill"),
    pytest.param(None, {"a": 1}, {"b": 2}, id="null-meta"),
    pytest.param({"a": 1}, {}, {}, id="empty-patch"),
    pytest.param({"a": {"n": 1}}, {"a": {"m": 2}}, {}, id="shallow-not-deep"),
    pytest.param({"a": 1}, {"a": None}, {}, id="json-null-value-overwrites"),
    pytest.param({"a": 1}, None, {"b": 2}, id="null-patch"),
    pytest.param({"a": 1}, {"c": 3}, None, id="null-defaults"),
]


@pytest.mark.parametrize(("meta", "patch", "defaults"), CASES)
async def test_the_postgrest_double_rpc_answers_like_the_real_function(
    conn: asyncpg.Connection,
    postgres_dsn: str,
    meta: dict[str, Any] | None,
    patch: dict[str, Any] | None,
    defaults: dict[str, Any] | None,
) -> None:
    """Same arguments, same merged meta: the double used by the PostgREST tests is faithful."""
    await insert_rows(postgres_dsn, [{"status": "published", "meta": meta}])
    # PostgREST turns a JSON null argument into SQL null, so that is what the real call gets
    patch_arg, defaults_arg = (None if v is None else json.dumps(v) for v in (patch, defaults))
    [real] = await merge(conn, "backfill_merge_meta(1, $1::jsonb, $2::jsonb)", patch_arg, defaults_arg)
    double = PostgrestDouble("key")
    double.add_row(status="published", meta=meta)
    async with serve(double.app()) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/rpc/backfill_merge_meta",
            json={"p_id": 1, "p_patch": patch, "p_defaults": defaults},
            headers={"apikey": "key"},
        )
    assert response.status_code == 200, response.text
    assert response.json()[0]["meta"] == real["meta"]
    if patch is not None and defaults is not None:  # the Python twin used by the optimistic fallback
        assert merged_meta(meta, MetaPatch(patch=patch, defaults=defaults)) == real["meta"]


async def test_the_postgrest_double_batched_rpc_answers_like_the_real_function(
    conn: asyncpg.Connection, postgres_dsn: str
) -> None:
    """Every case above as one batch, through the real function and the double: the same metas."""
    cases = [param.values for param in CASES]
    await insert_rows(postgres_dsn, [{"status": "published", "meta": meta} for meta, _, _ in cases])
    p_items = [
        {"id": i, "patch": patch, "defaults": defaults} for i, (_, patch, defaults) in enumerate(cases, 1)
    ]
    real = await merge(conn, "backfill_merge_meta_many($1::jsonb)", json.dumps(p_items))
    double = PostgrestDouble("key")
    for meta, _, _ in cases:
        double.add_row(status="published", meta=meta)
    async with serve(double.app()) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/rpc/backfill_merge_meta_many", json={"p_items": p_items}, headers={"apikey": "key"}
        )
        refused = await http.post(
            "/rpc/backfill_merge_meta_many",
            json={"p_items": [{"id": 1, "patch": {}}, {"id": 1, "patch": {}}]},
            headers={"apikey": "key"},
        )
    assert response.status_code == 200, response.text
    assert {row["id"]: row["meta"] for row in response.json()} == {row["id"]: row["meta"] for row in real}
    assert (refused.status_code, refused.json()["code"]) == (400, "22023")
