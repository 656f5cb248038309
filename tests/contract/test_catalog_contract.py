"""The catalog contract: PostgREST (against its double) and PostgreSQL (for real) answer alike.

Every test runs once per backend (`backend` fixture), so the two adapters cannot drift apart.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from backfill.core.errors import CatalogConflict, UpstreamRejected, UpstreamUnavailable
from backfill.core.model import Row
from backfill.core.payload import MetaPatch
from backfill.core.ports import Catalog
from tests.contract.conftest import MISSING_TABLE, Backend, candidate_ids, enriched_ids, mixed_rows

ROWS = 230
PAGE = 50


async def streamed(catalog: Catalog, since_id: int = 0, limit: int | None = None) -> list[list[Row]]:
    return [page async for page in catalog.stream_candidates(since_id, limit)]


def ids_of(pages: list[list[Row]]) -> list[int]:
    return [row.id for page in pages for row in page]


async def test_candidates_are_published_rows_without_a_jellyfin_public_url(backend: Backend) -> None:
    """Missing key, JSON null and null meta count; other statuses, a set URL or an empty string do not."""
    await backend.insert(
        [
            {"status": "published", "meta": {}},  # 1: key missing
            {"status": "published", "meta": {"jellyfin_public_url": None}},  # 2: JSON null
            {"status": "published", "meta": None},  # 3: SQL null meta
            {"status": "draft", "meta": {}},  # 4
            {"status": "approved", "meta": {}},  # 5
            {"status": "published", "meta": {"jellyfin_public_url": "https://w/x"}},  # 6: enriched
            {"meta": {}},  # 7: no status
            {"status": "published", "meta": {"jellyfin_public_url": ""}},  # 8: a value, if an empty one
            {"status": "published", "meta": {"jellyfin_item_id": "abc"}},  # 9: other keys only
            {"status": "Published", "meta": {}},  # 10: status is compared exactly
            {"status": "published"},  # 11: meta takes the column default
        ]
    )
    catalog = await backend.catalog()
    assert ids_of(await streamed(catalog)) == [1, 2, 3, 9, 11]
    assert await catalog.count_candidates() == 5
    assert await catalog.count_enriched() == 2  # 6 and 8: published with a value, even an empty one


async def test_candidates_stream_in_id_order_one_bounded_query_per_page(backend: Backend) -> None:
    """230 rows stored out of order, pages of 50: every candidate once, ascending, one query per page."""
    rows = mixed_rows(ROWS)
    await backend.insert(rows)
    queries: list[int | None] = []
    catalog = await backend.catalog(page_size=PAGE, observe=lambda _s, status, _t: queries.append(status))
    pages = await streamed(catalog)
    expected = candidate_ids(rows)
    assert ids_of(pages) == expected
    assert len(expected) > 2 * PAGE
    assert [len(page) for page in pages[:-1]] == [PAGE] * (len(pages) - 1)
    assert 0 < len(pages[-1]) <= PAGE
    assert len(queries) == len(pages) + (1 if len(pages[-1]) == PAGE else 0)


async def test_count_candidates_is_exact_beyond_one_page_and_honours_since_id(backend: Backend) -> None:
    """The count is exact (not an estimate), above `since_id`."""
    rows = mixed_rows(ROWS)
    await backend.insert(rows)
    catalog = await backend.catalog(page_size=PAGE)
    assert await catalog.count_candidates() == len(candidate_ids(rows))
    assert await catalog.count_candidates(since_id=100) == len(candidate_ids(rows, since_id=100))
    assert await catalog.count_candidates(since_id=ROWS) == 0


async def test_enriched_and_missing_split_the_published_rows_exactly(backend: Backend) -> None:
    """Every published row is either enriched or still missing; drafts and others are neither."""
    rows = mixed_rows(ROWS)
    await backend.insert(rows)
    catalog = await backend.catalog(page_size=PAGE)
    enriched = await catalog.count_enriched()
    missing = await catalog.count_candidates()
    assert enriched == len(enriched_ids(rows)) > 0
    assert missing is not None and enriched + missing == sum(r["status"] == "published" for r in rows)


async def test_since_id_streams_only_rows_above_it(backend: Backend) -> None:
    """`since_id` resumes after a given id, across pages."""
    rows = mixed_rows(ROWS)
    await backend.insert(rows)
    catalog = await backend.catalog(page_size=PAGE)
    assert ids_of(await streamed(catalog, since_id=100)) == candidate_ids(rows, since_id=100)
    assert await streamed(catalog, since_id=ROWS) == []


async def test_limit_caps_the_rows_streamed_even_in_the_middle_of_a_page(backend: Backend) -> None:
    """`limit=75` with pages of 50 yields pages of 50 and 25; `limit=0` yields nothing."""
    rows = mixed_rows(ROWS)
    await backend.insert(rows)
    catalog = await backend.catalog(page_size=PAGE)
    pages = await streamed(catalog, limit=75)
    assert [len(page) for page in pages] == [50, 25]
    assert ids_of(pages) == candidate_ids(rows)[:75]
    assert ids_of(await streamed(catalog, since_id=100, limit=3)) == candidate_ids(rows, since_id=100)[:3]
    assert await streamed(catalog, limit=0) == []


async def test_fetch_rows_returns_the_existing_rows_and_skips_missing_ids(backend: Backend) -> None:
    """Any status, any meta; ids that do not exist are simply absent; no ids, no rows."""
    await backend.insert([{"status": "draft"}, {"status": "published", "meta": None}, {"status": "x"}])
    catalog = await backend.catalog()
    rows = await catalog.fetch_rows([3, 1, 999])
    assert sorted(row.id for row in rows) == [1, 3]
    assert await catalog.fetch_rows([]) == []


async def test_get_row_decodes_every_column_and_returns_none_when_missing(backend: Backend) -> None:
    """The same Row from both backends: text columns, meta as a dict, created_at as ISO 8601."""
    await backend.insert(
        [
            {
                "title": "Big Buck Bunny",
                "namespace": "pmoves",
                "content_url": "s3://outputs/bbb.mp4",
                "status": "published",
                "meta": {"tags": ["a", "b"], "duration": 596.5, "nested": {"k": None}},
                "created_at": "2025-06-01T10:00:00+00:00",
            },
            {"status": "published"},
        ]
    )
    catalog = await backend.catalog()
    assert await catalog.get_row(1) == Row(
        id=1,
        title="Big Buck Bunny",
        namespace="pmoves",
        content_url="s3://outputs/bbb.mp4",
        status="published",
        meta={"tags": ["a", "b"], "duration": 596.5, "nested": {"k": None}},
        created_at="2025-06-01T10:00:00+00:00",
    )
    defaults = await catalog.get_row(2)
    assert defaults is not None
    assert defaults.meta == {}
    assert defaults.title is None
    assert defaults.created_at is not None
    assert datetime.fromisoformat(defaults.created_at).tzinfo is not None
    assert await catalog.get_row(999) is None


async def test_merge_overwrites_patch_keys_and_keeps_every_other_key(backend: Backend) -> None:
    """Keys of other services survive; patch keys win over stored ones; the stored row is returned."""
    await backend.insert([{"status": "published", "meta": {"keep": {"x": 1}, "thumbnail_url": "old"}}])
    catalog = await backend.catalog()
    merged = await catalog.merge_meta(
        1, MetaPatch(patch={"thumbnail_url": "new", "duration": 3.5}, defaults={})
    )
    assert merged is not None
    assert merged.meta == {"keep": {"x": 1}, "thumbnail_url": "new", "duration": 3.5}
    assert await catalog.get_row(1) == merged


async def test_merge_defaults_only_fill_keys_the_row_does_not_have(backend: Backend) -> None:
    """`publish_event_sent_at` is filled in when missing and never overwritten when present."""
    await backend.insert(
        [
            {"status": "published", "meta": {"publish_event_sent_at": "2025-06-01T10:00:00Z"}},
            {"status": "published", "meta": {"other": 1}},
        ]
    )
    catalog = await backend.catalog()
    patch = MetaPatch(patch={"backfill_version": "v"}, defaults={"publish_event_sent_at": "now"})
    kept = await catalog.merge_meta(1, patch)
    filled = await catalog.merge_meta(2, patch)
    assert kept is not None
    assert kept.meta == {"publish_event_sent_at": "2025-06-01T10:00:00Z", "backfill_version": "v"}
    assert filled is not None
    assert filled.meta == {"other": 1, "publish_event_sent_at": "now", "backfill_version": "v"}


async def test_merge_into_null_meta_starts_from_an_empty_object(backend: Backend) -> None:
    """SQL null meta becomes defaults plus patch."""
    await backend.insert([{"status": "published", "meta": None}])
    catalog = await backend.catalog()
    merged = await catalog.merge_meta(1, MetaPatch(patch={"a": 1}, defaults={"b": 2}))
    assert merged is not None
    assert merged.meta == {"b": 2, "a": 1}


async def test_merge_of_a_missing_row_returns_none_and_creates_nothing(backend: Backend) -> None:
    """A row deleted meanwhile is reported as gone, never recreated."""
    await backend.insert([{"status": "published"}])
    catalog = await backend.catalog()
    assert await catalog.merge_meta(999, MetaPatch(patch={"a": 1}, defaults={})) is None
    assert await catalog.get_row(999) is None
    assert [row.id for row in await catalog.fetch_rows([1, 999])] == [1]


async def test_a_merged_public_url_takes_the_row_out_of_the_candidates(backend: Backend) -> None:
    """Once enriched, a row is neither streamed nor counted as missing, and is counted as enriched."""
    await backend.insert([{"status": "published"}, {"status": "published"}])
    catalog = await backend.catalog()
    assert (await catalog.count_enriched(), await catalog.count_candidates()) == (0, 2)
    await catalog.merge_meta(1, MetaPatch(patch={"jellyfin_public_url": "https://w/1"}, defaults={}))
    assert ids_of(await streamed(catalog)) == [2]
    assert (await catalog.count_enriched(), await catalog.count_candidates()) == (1, 1)


async def test_concurrent_merges_on_one_row_lose_no_key(backend: Backend) -> None:
    """20 merges of different keys into the same row at once: every key is there afterwards."""
    await backend.insert([{"status": "published", "meta": {"origin": True}}])
    catalog = await backend.catalog()
    patches = [MetaPatch(patch={f"k{i}": i}, defaults={}) for i in range(20)]
    results = await asyncio.gather(*(catalog.merge_meta(1, patch) for patch in patches))
    assert all(row is not None for row in results)
    row = await catalog.get_row(1)
    assert row is not None
    assert row.meta == {"origin": True, **{f"k{i}": i for i in range(20)}}


async def test_merge_many_merges_each_row_its_own_way_in_one_call(backend: Backend) -> None:
    """Three rows and a missing id in one call: each row gets its patch and defaults, the missing id is
    absent from the result. The backend is asked once, plus one read of the id the merge did not
    return (gone, or a meta that is not an object: only that read tells them apart)."""
    await backend.insert(
        [
            {"status": "published", "meta": {"keep": 1, "publish_event_sent_at": "before"}},
            {"status": "published", "meta": None},
            {"status": "published", "meta": {"a": 0}},
        ]
    )
    calls: list[int | None] = []
    catalog = await backend.catalog(observe=lambda _service, status, _seconds: calls.append(status))
    defaults = {"publish_event_sent_at": "now"}
    merged = await catalog.merge_many(
        [
            (3, MetaPatch(patch={"a": 3}, defaults={})),
            (999, MetaPatch(patch={"a": 9}, defaults={})),
            (1, MetaPatch(patch={"a": 1}, defaults=defaults)),
            (2, MetaPatch(patch={"a": 2}, defaults=defaults)),
        ]
    )
    assert calls == [200, 200]
    metas = {row_id: row.meta for row_id, row in merged.items() if isinstance(row, Row)}
    assert metas == {
        1: {"keep": 1, "publish_event_sent_at": "before", "a": 1},
        2: {"publish_event_sent_at": "now", "a": 2},
        3: {"a": 3},
    }
    assert await catalog.merge_many([]) == {}
    assert calls == [200, 200], "an empty batch asks nothing"
    assert {row.id: row.meta for row in await catalog.fetch_rows([1, 2, 3])} == metas


async def test_merge_many_refuses_a_row_named_twice_and_writes_nothing(backend: Backend) -> None:
    """Two patches for one row in one statement would keep one of them at random."""
    await backend.insert([{"status": "published", "meta": {"a": 0}}])
    catalog = await backend.catalog()
    with pytest.raises(ValueError, match="more than once"):
        await catalog.merge_many([(1, MetaPatch({"a": 1}, {})), (1, MetaPatch({"b": 2}, {}))])
    row = await catalog.get_row(1)
    assert row is not None
    assert row.meta == {"a": 0}


async def test_a_rejected_batch_is_merged_row_by_row_so_only_the_row_at_fault_fails(backend: Backend) -> None:
    """The backend refuses every write touching row 2: rows 1 and 3 are merged, row 2 carries the
    rejection (not retryable) as its own result."""
    await backend.insert([{"status": "published", "meta": {}} for _ in range(3)])
    catalog = await backend.catalog()
    await backend.reject_writes(2)
    merged = await catalog.merge_many([(i, MetaPatch(patch={"done": i}, defaults={})) for i in (1, 2, 3)])
    assert isinstance(merged[2], UpstreamRejected)
    assert not merged[2].retryable
    assert {i: row.meta for i, row in merged.items() if isinstance(row, Row)} == {
        1: {"done": 1},
        3: {"done": 3},
    }
    row = await catalog.get_row(2)
    assert row is not None
    assert row.meta == {}


async def test_a_transient_failure_of_a_batch_fails_the_whole_call_and_writes_nothing(
    backend: Backend,
) -> None:
    """503 / a killed connection concerns every row of the batch: raised, retryable, nothing written."""
    await backend.insert([{"status": "published", "meta": {"a": 1}} for _ in range(3)])
    catalog = await backend.catalog()
    items = [(i, MetaPatch(patch={"b": 2}, defaults={})) for i in (1, 2, 3)]
    with pytest.raises(UpstreamUnavailable):
        await backend.interrupted(lambda: catalog.merge_many(items))
    assert [row.meta for row in await catalog.fetch_rows([1, 2, 3])] == [{"a": 1}] * 3


async def test_a_meta_that_is_not_an_object_is_never_merged_into_and_is_reported(backend: Backend) -> None:
    """`||` would append the patch to an array: both merges leave such a row alone and report it as a
    retryable conflict naming the problem (the retry reads the row and dead-letters it)."""
    await backend.insert([{"status": "published", "meta": {"a": 0}}, {"status": "published", "meta": [1, 2]}])
    catalog = await backend.catalog()
    patch = MetaPatch(patch={"jellyfin_public_url": "https://w/2"}, defaults={"x": 1})
    with pytest.raises(CatalogConflict, match="row 2 was not merged: meta is an array"):
        await catalog.merge_meta(2, patch)
    merged = await catalog.merge_many([(1, patch), (2, patch), (999, patch)])
    assert isinstance(merged[2], CatalogConflict)
    assert merged[2].retryable
    assert isinstance(merged[1], Row)
    assert merged[1].meta == {"x": 1, "a": 0, "jellyfin_public_url": "https://w/2"}
    assert 999 not in merged  # gone rows stay absent
    row = await catalog.get_row(2)
    assert row is not None
    assert row.meta == [1, 2]


async def test_overlapping_batches_in_opposite_orders_lose_no_key(backend: Backend) -> None:
    """Eight batches over the same 30 rows at once, half listed backwards: none deadlocks, no key lost."""
    await backend.insert([{"status": "published", "meta": {"origin": True}} for _ in range(30)])
    catalog = await backend.catalog()
    ids = list(range(1, 31))
    batches = [
        [(i, MetaPatch(patch={f"k{n}": n}, defaults={})) for i in (ids if n % 2 else ids[::-1])]
        for n in range(8)
    ]
    results = await asyncio.gather(*(catalog.merge_many(batch) for batch in batches))
    assert all(len(result) == 30 and all(isinstance(r, Row) for r in result.values()) for result in results)
    rows = await catalog.fetch_rows(ids)
    assert {row.id: row.meta for row in rows} == {
        i: {"origin": True, **{f"k{n}": n for n in range(8)}} for i in ids
    }


async def test_a_transient_failure_is_retryable_writes_nothing_and_the_next_call_succeeds(
    backend: Backend,
) -> None:
    """503 from PostgREST, or the server killing our connection mid-query: UpstreamUnavailable."""
    await backend.insert([{"status": "published", "meta": {"a": 1}}])
    catalog = await backend.catalog()
    with pytest.raises(UpstreamUnavailable) as failure:
        await backend.interrupted(lambda: catalog.merge_meta(1, MetaPatch(patch={"b": 2}, defaults={})))
    assert failure.value.service == "catalog"
    assert failure.value.retryable
    row = await catalog.get_row(1)
    assert row is not None
    assert row.meta == {"a": 1}


async def test_a_fault_that_passes_costs_a_merge_nothing(backend: Backend) -> None:
    """503 PGRST002 (the call was not run) / a connection killed mid-merge, once: the merge, which
    gives the same row however often it runs, is made again within the call; merged once."""
    await backend.insert([{"status": "published", "meta": {"a": 1}} for _ in range(3)])
    catalog = await backend.catalog()
    merged = await backend.interrupted_once(
        lambda: catalog.merge_meta(1, MetaPatch(patch={"b": 2}, defaults={"c": 3}))
    )
    assert merged is not None and merged.meta == {"a": 1, "b": 2, "c": 3}
    items = [(i, MetaPatch(patch={"b": 2}, defaults={})) for i in (2, 3)]
    results = await backend.interrupted_once(lambda: catalog.merge_many(items))
    assert {row_id: getattr(row, "meta", row) for row_id, row in results.items()} == {
        2: {"a": 1, "b": 2},
        3: {"a": 1, "b": 2},
    }


async def test_an_unreachable_backend_is_retryable(backend: Backend) -> None:
    """Nothing listening on the port: UpstreamUnavailable, whether at connect or at the first query."""
    with pytest.raises(UpstreamUnavailable):
        catalog = await backend.unreachable()
        await catalog.get_row(1)


async def test_a_missing_table_is_rejected_not_retried(backend: Backend) -> None:
    """A table that does not exist is a configuration error no retry can fix."""
    catalog = await backend.catalog(table=MISSING_TABLE)
    with pytest.raises(UpstreamRejected) as rejected:
        await catalog.get_row(1)
    assert not rejected.value.retryable
    with pytest.raises(UpstreamRejected):
        await streamed(catalog)
    with pytest.raises(UpstreamRejected):
        await catalog.count_candidates()
    with pytest.raises(UpstreamRejected):
        await catalog.count_enriched()


async def test_every_call_is_observed_under_catalog_with_its_outcome(backend: Backend) -> None:
    """One observation per request: ("catalog", 200, seconds) on success, a non-200 status on failure."""
    await backend.insert([{"status": "published"}])
    seen: list[tuple[str, int | None, float]] = []
    catalog = await backend.catalog(observe=lambda *observed: seen.append(observed))
    await catalog.get_row(1)
    await catalog.count_candidates()
    await catalog.count_enriched()
    await catalog.merge_meta(1, MetaPatch(patch={"a": 1}, defaults={}))
    assert [(service, status) for service, status, _ in seen] == [("catalog", 200)] * 4
    assert all(seconds >= 0 for _, _, seconds in seen)
    seen.clear()
    with pytest.raises(UpstreamUnavailable):
        await backend.interrupted(lambda: catalog.get_row(1))
    assert len(seen) == backend.tries_per_read  # each request is observed, retried ones too
    assert all(service == "catalog" and status != 200 for service, status, _ in seen)


async def test_a_meta_that_is_not_an_object_never_breaks_its_page(backend: Backend) -> None:
    """meta as an array, a string or a number: the row still decodes (and is a candidate, as in SQL,
    where `->>` on a non-object is null); the rows around it are read as usual."""
    await backend.insert(
        [
            {"status": "published", "meta": {}},
            {"status": "published", "meta": ["not", "an", "object"]},
            {"status": "published", "meta": "text"},
            {"status": "published", "meta": 7},
            {"status": "published", "meta": {"jellyfin_item_id": "abc"}},
        ]
    )
    catalog = await backend.catalog()
    pages = await streamed(catalog)
    assert ids_of(pages) == [1, 2, 3, 4, 5]
    metas = {row.id: row.meta for page in pages for row in page}
    assert metas[2] == ["not", "an", "object"] and metas[3] == "text" and metas[4] == 7
    row = await catalog.get_row(2)
    assert row is not None and row.meta_object_problem is not None and row.meta_dict == {}
