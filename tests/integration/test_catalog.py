"""The PostgREST catalog adapter against the strict double: paging, counts, safe merges, error mapping."""

from __future__ import annotations

import pytest

from backfill.adapters.postgrest import PostgrestCatalog
from backfill.adapters.transport import READ_ATTEMPTS, HttpClient
from backfill.core.errors import CatalogConflict, UpstreamRejected, UpstreamUnavailable
from backfill.core.payload import MetaPatch
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.serve import serve

KEY = "service-key"


def seeded(n: int, rpc: bool = True, base_path: str = "") -> PostgrestDouble:
    db = PostgrestDouble(KEY, rpc_installed=rpc, base_path=base_path)
    for i in range(1, n + 1):
        status = "draft" if i % 10 == 0 else "published"
        meta = (
            {"jellyfin_public_url": "https://x"}
            if i % 7 == 0
            else ({} if i % 3 else {"jellyfin_public_url": None})
        )
        db.add_row(title=f"t{i}", status=status, content_url=f"s3://o/{i}.mp4", meta=meta)
    return db


def expected_candidates(db: PostgrestDouble, since: int = 0) -> list[int]:
    return [
        rid
        for rid, row in sorted(db.rows.items())
        if rid > since
        and row["status"] == "published"
        and (row["meta"] or {}).get("jellyfin_public_url") is None
    ]


async def collect(catalog: PostgrestCatalog, since: int = 0, limit: int | None = None) -> list[int]:
    return [row.id for page in [p async for p in catalog.stream_candidates(since, limit)] for row in page]


async def test_keyset_paging_streams_every_candidate_past_the_1000_row_cap(http: HttpClient) -> None:
    """2,500 rows with Supabase's 1,000-row cap: every candidate exactly once, in id order."""
    db = seeded(2500)
    async with serve(db.app()) as url:
        catalog = PostgrestCatalog(http, url, KEY)
        assert await collect(catalog) == expected_candidates(db)
        assert await catalog.count_candidates() == len(expected_candidates(db))
        assert await collect(catalog, since=2000) == expected_candidates(db, 2000)
        assert await collect(catalog, limit=5) == expected_candidates(db)[:5]


async def test_a_smaller_server_cap_is_handled_by_page_size(http: HttpClient) -> None:
    """Pages never ask for more than the configured page size, and the cap never hides rows."""
    db = seeded(300)
    async with serve(db.app()) as url:
        catalog = PostgrestCatalog(http, url, KEY, page_size=50)
        assert await collect(catalog) == expected_candidates(db)


async def test_supabase_cli_base_path_works(http: HttpClient) -> None:
    """SUPABASE_REST_URL ending in /rest/v1 is used as given."""
    db = seeded(20, base_path="/rest/v1")
    async with serve(db.app()) as url:
        catalog = PostgrestCatalog(http, f"{url}/rest/v1", KEY)
        assert await collect(catalog) == expected_candidates(db)
        assert {r.id for r in await catalog.fetch_rows([1, 2, 999])} == {1, 2}


@pytest.mark.parametrize("rpc", [True, False], ids=["rpc", "optimistic-patch"])
async def test_merge_keeps_other_keys_and_fills_defaults_only_when_missing(
    http: HttpClient, rpc: bool
) -> None:
    """Both merge paths: patch keys overwrite, other keys survive, defaults never overwrite."""
    db = PostgrestDouble(KEY, rpc_installed=rpc)
    db.add_row(title="a", status="published", meta={"keep": 1, "publish_event_sent_at": "old", "x": "old"})
    db.add_row(title="b", status="published", meta=None)
    async with serve(db.app()) as url:
        catalog = PostgrestCatalog(http, url, KEY)
        patch = MetaPatch(
            patch={"x": "new", "jellyfin_item_id": "i"}, defaults={"publish_event_sent_at": "now"}
        )
        row = await catalog.merge_meta(1, patch)
        assert row is not None
        assert row.meta == {"keep": 1, "publish_event_sent_at": "old", "x": "new", "jellyfin_item_id": "i"}
        null_meta = await catalog.merge_meta(2, patch)
        assert null_meta is not None
        assert null_meta.meta == {"x": "new", "jellyfin_item_id": "i", "publish_event_sent_at": "now"}
        assert await catalog.merge_meta(99, patch) is None
        assert catalog.rpc_available is rpc
        assert db.calls["patch"] == (0 if rpc else 2)


@pytest.mark.parametrize("rpc", [True, False], ids=["per-row-rpc", "optimistic-patch"])
async def test_an_install_without_the_batched_function_merges_row_by_row_and_learns_it_once(
    http: HttpClient, rpc: bool
) -> None:
    """An older install (only backfill_merge_meta, or no function at all): the first batch gets one
    404 PGRST202, every batch after that goes row by row at once; nothing is lost either way."""
    db = PostgrestDouble(KEY, rpc_installed=rpc, batch_rpc_installed=False)
    for i in range(1, 7):
        db.add_row(title=f"t{i}", status="published", meta={"keep": i})
    async with serve(db.app()) as url:
        catalog = PostgrestCatalog(http, url, KEY)
        first = await catalog.merge_many([(i, MetaPatch(patch={"x": i}, defaults={})) for i in (1, 2, 3)])
        second = await catalog.merge_many([(i, MetaPatch(patch={"x": i}, defaults={})) for i in (4, 5, 6)])
    assert catalog.batch_rpc_available is False
    batch_calls = [path for _, path, _ in db.requests if path.endswith("/rpc/backfill_merge_meta_many")]
    assert len(batch_calls) == 1
    assert {i: r.meta for i, r in {**first, **second}.items() if not isinstance(r, Exception)} == {
        i: {"keep": i, "x": i} for i in range(1, 7)
    }
    assert db.calls["patch"] == (0 if rpc else 6)


async def test_the_batched_function_is_one_request_for_many_rows(http: HttpClient) -> None:
    """With the shipped SQL installed, 40 rows are merged with one request; one row uses the per-row
    function (same cost, and it also works on an install without the batched one)."""
    db = PostgrestDouble(KEY)
    for i in range(1, 42):
        db.add_row(title=f"t{i}", status="published", meta={})
    async with serve(db.app()) as url:
        catalog = PostgrestCatalog(http, url, KEY)
        merged = await catalog.merge_many([(i, MetaPatch(patch={"x": i}, defaults={})) for i in range(1, 41)])
        single = await catalog.merge_many([(41, MetaPatch(patch={"x": 41}, defaults={}))])
    assert (db.calls["rpc"], db.calls["rpc_batches"]) == (2, 1)
    assert catalog.batch_rpc_available is True
    assert sorted(merged) == list(range(1, 41))
    assert db.rows[41]["meta"] == {"x": 41}
    assert list(single) == [41]


async def test_optimistic_merge_retries_a_lost_race_and_keeps_the_concurrent_write(
    http: HttpClient,
) -> None:
    """Another service writes a key between our read and our PATCH: we retry and keep its key."""
    db = PostgrestDouble(KEY, rpc_installed=False)
    db.add_row(title="a", status="published", meta={"a": 1})
    raced = []

    def concurrent_writer(row_id: int) -> None:
        if not raced:
            raced.append(row_id)
            db.rows[row_id]["meta"] = {**db.rows[row_id]["meta"], "other": "written meanwhile"}

    db.before_write = concurrent_writer
    async with serve(db.app()) as url:
        row = await PostgrestCatalog(http, url, KEY).merge_meta(1, MetaPatch(patch={"b": 2}, defaults={}))
    assert row is not None
    assert row.meta == {"a": 1, "other": "written meanwhile", "b": 2}
    assert db.calls["patch"] == 2


async def test_optimistic_merge_gives_up_with_a_retryable_conflict(http: HttpClient) -> None:
    """A row that changes under every attempt raises CatalogConflict (retried later), nothing written."""
    db = PostgrestDouble(KEY, rpc_installed=False)
    db.add_row(title="a", status="published", meta={"n": 0})

    def always_changing(row_id: int) -> None:
        db.rows[row_id]["meta"] = {"n": db.rows[row_id]["meta"]["n"] + 1}

    db.before_write = always_changing
    async with serve(db.app()) as url:
        with pytest.raises(CatalogConflict):
            await PostgrestCatalog(http, url, KEY).merge_meta(1, MetaPatch(patch={"b": 2}, defaults={}))
    assert "b" not in db.rows[1]["meta"]


async def test_transient_and_auth_errors_map_to_retryable_and_rejected(http: HttpClient) -> None:
    """503 PGRST002 is retryable (and retried within the read); a wrong key (401 PGRST301) is a
    rejection; neither leaks the key."""
    db = seeded(5)
    async with serve(db.app()) as url:
        db.fail_next = READ_ATTEMPTS  # every try of the read
        with pytest.raises(UpstreamUnavailable) as transient:
            await PostgrestCatalog(http, url, KEY).get_row(1)
        assert transient.value.status == 503
        db.fail_next = READ_ATTEMPTS - 1  # a fault that passes within the read costs no error
        assert (await PostgrestCatalog(http, url, KEY).get_row(1)) is not None
        with pytest.raises(UpstreamRejected) as rejected:
            await PostgrestCatalog(http, url, "wrong-key").get_row(1)
        assert rejected.value.status == 401
        assert "wrong-key" not in str(rejected.value)
