"""keyset_pages: id order, short page or limit ends it, the next page is read while one is worked on."""

from __future__ import annotations

import asyncio

from backfill.adapters.catalog import keyset_pages
from backfill.core.model import Row


class Table:
    def __init__(self, count: int) -> None:
        self.ids = list(range(1, count + 1))
        self.requests: list[tuple[int, int]] = []
        self.finished: list[int] = []
        self.page_read = asyncio.Event()  # set whenever a page read completes

    async def fetch(self, after: int, size: int) -> list[Row]:
        self.requests.append((after, size))
        await asyncio.sleep(0.01)  # the catalog's latency, which the read ahead overlaps
        page = [Row(id=i) for i in self.ids if i > after][:size]
        self.finished.append(after)
        self.page_read.set()
        return page


async def collect(table: Table, since: int = 0, limit: int | None = None, size: int = 3) -> list[list[int]]:
    return [[row.id for row in page] async for page in keyset_pages(table.fetch, since, limit, size)]


async def test_pages_follow_the_last_id_until_a_short_page() -> None:
    table = Table(7)
    assert await collect(table) == [[1, 2, 3], [4, 5, 6], [7]]
    assert table.requests == [(0, 3), (3, 3), (6, 3)]


async def test_an_exact_multiple_ends_on_an_empty_page_and_limit_shrinks_the_last_request() -> None:
    table = Table(6)
    assert await collect(table) == [[1, 2, 3], [4, 5, 6]]
    assert table.requests[-1] == (6, 3)
    limited = Table(10)
    assert await collect(limited, since=2, limit=4) == [[3, 4, 5], [6]]
    assert limited.requests == [(2, 3), (5, 1)]


async def test_the_next_page_is_already_being_read_while_the_caller_works() -> None:
    table = Table(9)
    pages = keyset_pages(table.fetch, 0, None, 3)
    first = await anext(pages)
    assert [r.id for r in first] == [1, 2, 3]
    table.page_read.clear()
    await asyncio.wait_for(table.page_read.wait(), 10)  # the caller is busy with page 1 and asks nothing
    assert table.finished == [0, 3]  # page 2 arrived meanwhile
    await pages.aclose()


async def test_stopping_early_cancels_the_read_ahead() -> None:
    table = Table(9)
    reads: list[asyncio.Future[list[Row]]] = []

    def fetch(after: int, size: int) -> asyncio.Future[list[Row]]:
        """`table.fetch`, as a future the test can wait for (keyset_pages awaits it as it is)."""
        reads.append(asyncio.ensure_future(table.fetch(after, size)))
        return reads[-1]

    pages = keyset_pages(fetch, 0, None, 3)
    await anext(pages)
    await pages.aclose()
    assert len(reads) == 2  # page 1, and the read ahead of page 2
    await asyncio.wait_for(asyncio.wait(reads), 10)  # every read has ended, one way or the other
    assert reads[1].cancelled()
    assert table.finished == [0]  # the read ahead (started or not) never completed
    assert table.requests[0] == (0, 3) and len(table.requests) <= 2


async def test_zero_limit_reads_nothing() -> None:
    table = Table(3)
    assert await collect(table, limit=0) == []
    assert table.requests == []
