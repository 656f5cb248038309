"""Batcher: loads asked for in the same event-loop turn become one call; errors reach every waiter."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from backfill.adapters.batching import Batcher, WriteBatcher, each_on_failure
from backfill.core.errors import UpstreamRejected, UpstreamUnavailable


class Source:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail = fail

    async def load_many(self, keys: Sequence[int]) -> dict[int, str]:
        self.calls.append(list(keys))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return {k: f"v{k}" for k in keys if k % 10 != 0}  # multiples of 10 do not exist


async def test_concurrent_loads_share_one_call_and_missing_keys_are_none() -> None:
    source = Source()
    batcher = Batcher(source.load_many, max_batch=40)
    results = await asyncio.gather(*(batcher.load(k) for k in [1, 2, 10, 2, 3]))
    assert results == ["v1", "v2", None, "v2", "v3"]
    assert source.calls == [[1, 2, 10, 3]]  # one call, each key once


async def test_batches_are_split_at_max_batch_and_later_turns_get_their_own_call() -> None:
    source = Source()
    batcher = Batcher(source.load_many, max_batch=2)
    await asyncio.gather(*(batcher.load(k) for k in [1, 2, 3, 4, 5]))
    assert source.calls == [[1, 2], [3, 4], [5]]
    assert await batcher.load(7) == "v7"
    assert source.calls[-1] == [7]
    assert batcher.batches == 4


async def test_a_failed_call_fails_every_waiter_with_its_error() -> None:
    source = Source(fail=RuntimeError("upstream down"))
    batcher = Batcher(source.load_many, max_batch=40)
    results = await asyncio.gather(*(batcher.load(k) for k in [1, 2]), return_exceptions=True)
    assert [str(r) for r in results] == ["upstream down", "upstream down"]
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_a_cancelled_waiter_does_not_break_the_others() -> None:
    source = Source()
    batcher = Batcher(source.load_many, max_batch=40)
    doomed = asyncio.ensure_future(batcher.load(1))
    survivor = asyncio.ensure_future(batcher.load(2))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await survivor == "v2"
    with pytest.raises(asyncio.CancelledError):
        await doomed


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Source().load_many, max_batch=0)


class Sink:
    """Writes (key, arg) pairs; key 13 is refused on its own, the whole call fails when told to."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[list[tuple[int, str]]] = []
        self.fail = fail

    async def write_many(self, items: Sequence[tuple[int, str]]) -> dict[int, str | BaseException]:
        self.calls.append(list(items))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        results: dict[int, str | BaseException] = {}
        for key, arg in items:
            if key == 13:
                results[key] = ValueError(f"row {key} refused")
            elif key % 10 != 0:  # multiples of 10 are gone
                results[key] = f"{key}:{arg}"
        return results


async def test_writes_of_one_turn_share_one_call_and_each_keeps_its_own_argument() -> None:
    sink = Sink()
    batcher = WriteBatcher(sink.write_many, max_batch=40)
    results = await asyncio.gather(*(batcher.submit(k, f"a{k}") for k in [1, 2, 10, 3]))
    assert results == ["1:a1", "2:a2", None, "3:a3"]
    assert sink.calls == [[(1, "a1"), (2, "a2"), (10, "a10"), (3, "a3")]]


async def test_a_key_written_twice_in_one_turn_goes_into_a_later_call_not_into_the_first() -> None:
    """Two patches for one row cannot be one statement's work: the second waits for its own call."""
    sink = Sink()
    batcher = WriteBatcher(sink.write_many, max_batch=2)
    results = await asyncio.gather(
        *(batcher.submit(k, a) for k, a in [(1, "x"), (1, "y"), (2, "z"), (3, "w")])
    )
    assert results == ["1:x", "1:y", "2:z", "3:w"]
    assert sink.calls == [[(1, "x"), (2, "z")], [(1, "y"), (3, "w")]]
    assert all(len({k for k, _ in call}) == len(call) for call in sink.calls)


async def test_a_result_that_is_an_exception_fails_only_its_own_waiter() -> None:
    sink = Sink()
    batcher = WriteBatcher(sink.write_many, max_batch=40)
    results = await asyncio.gather(*(batcher.submit(k, "a") for k in [12, 13, 14]), return_exceptions=True)
    assert results[0] == "12:a"
    assert isinstance(results[1], ValueError)
    assert str(results[1]) == "row 13 refused"
    assert results[2] == "14:a"
    assert len(sink.calls) == 1


async def test_a_failed_write_call_fails_every_waiter_of_that_call() -> None:
    sink = Sink(fail=RuntimeError("catalog down"))
    batcher = WriteBatcher(sink.write_many, max_batch=40)
    results = await asyncio.gather(*(batcher.submit(k, "a") for k in [1, 2]), return_exceptions=True)
    assert [str(r) for r in results] == ["catalog down", "catalog down"]
    assert batcher.batches == 1


async def test_each_on_failure_reads_each_key_alone_when_the_batch_fails_transiently() -> None:
    calls: list[list[int]] = []

    async def load_many(keys: Sequence[int]) -> dict[int, str]:
        calls.append(list(keys))
        raise UpstreamUnavailable("catalog", "503")

    async def load_one(key: int) -> str | None:
        if key == 2:
            raise UpstreamUnavailable("catalog", "still 503 for row 2")
        return None if key == 3 else f"row {key}"

    found = await each_on_failure(load_many, load_one)([1, 2, 3])
    assert calls == [[1, 2, 3]]
    assert found[1] == "row 1"
    assert isinstance(found[2], UpstreamUnavailable)  # fails only its own waiter
    assert 3 not in found  # missing stays missing


async def test_each_on_failure_passes_a_rejection_and_a_single_key_through() -> None:
    async def rejected(keys: Sequence[int]) -> dict[int, str]:
        raise UpstreamRejected("catalog", "401")

    async def never(key: int) -> str | None:
        raise AssertionError("a rejection is not retried key by key")

    with pytest.raises(UpstreamRejected):
        await each_on_failure(rejected, never)([1, 2])

    async def unavailable(keys: Sequence[int]) -> dict[int, str]:
        raise UpstreamUnavailable("catalog", "503")

    with pytest.raises(UpstreamUnavailable):
        await each_on_failure(unavailable, never)([1])
