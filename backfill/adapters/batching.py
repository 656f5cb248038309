"""Batched calls: what the tasks of one event-loop turn ask for is sent as one request.

A worker fetches several messages at once and starts one task per message; each task reads its row,
looks up its Jellyfin item and finally merges its row's meta. With a batcher in front of those calls,
the tasks of one fetch share one `id=in.(...)` catalog read, one `ids=` Jellyfin lookup and one batched
merge instead of one request each (`make bench`: HTTP is most of a worker's CPU). The per-row code
stays as it was: it awaits `load(key)` or `submit(key, arg)`.

The batch is dispatched with `loop.call_soon` from the first call of a turn, so every task that reaches
its call in that turn joins it; nothing waits on a timer. A failed batch fails every waiter with the
same error, which each row then handles as it would its own failed request; a result that is itself
an exception fails only its own waiter (a row rejected on its own). `each_on_failure` turns a failed
batched read into one read per key, so a transient fault fails only the reads that fail again.

- `Batcher` (reads): a key asked for twice in one turn is loaded once and both waiters get the value.
- `WriteBatcher` (writes): each submission carries its own argument, so a key submitted twice in one
  turn goes into a later call rather than being merged with the first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

from backfill.core.errors import BackfillError

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")
V = TypeVar("V")

LoadMany = Callable[[Sequence[K]], Awaitable[Mapping[K, "V | BaseException"]]]
WriteMany = Callable[[Sequence[tuple[K, A]]], Awaitable[Mapping[K, "V | BaseException"]]]
_Entry = tuple[K, A, list["asyncio.Future[V | None]"]]


class _Coalescer(Generic[K, A, V]):
    """What both batchers share: collect a turn's calls, split them into chunks, settle every waiter."""

    def __init__(self, call_many: WriteMany[K, A, V], max_batch: int, *, share_keys: bool) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._call_many = call_many
        self._max_batch = max_batch
        self._share_keys = share_keys
        self._pending: list[tuple[K, A, asyncio.Future[V | None]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # how many calls were made (for tests and metrics)

    async def _call(self, key: K, arg: A) -> V | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        self._pending.append((key, arg, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _chunks(self, pending: list[tuple[K, A, asyncio.Future[V | None]]]) -> list[list[_Entry[K, A, V]]]:
        """Chunks of at most `max_batch` distinct keys, in order of arrival. A repeated key joins its
        first entry when keys are shared, else the first later chunk that does not have it yet."""
        chunks: list[dict[K, _Entry[K, A, V]]] = []
        for key, arg, future in pending:
            for chunk in chunks:
                if key in chunk:
                    if self._share_keys:
                        chunk[key][2].append(future)
                        break
                elif len(chunk) < self._max_batch:
                    chunk[key] = (key, arg, [future])
                    break
            else:
                chunks.append({key: (key, arg, [future])})
        return [list(chunk.values()) for chunk in chunks]

    def _dispatch(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for chunk in self._chunks(pending):
            task = asyncio.ensure_future(self._run(chunk))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, chunk: list[_Entry[K, A, V]]) -> None:
        self.batches += 1
        try:
            found = await self._call_many([(key, arg) for key, arg, _ in chunk])
        except Exception as exc:  # noqa: BLE001 - not swallowed: every waiter gets it, as its own
            for _, _, futures in chunk:
                _settle(futures, None, exc)
            return
        for key, _, futures in chunk:
            value = found.get(key)
            if isinstance(value, BaseException):
                _settle(futures, None, value)
            else:
                _settle(futures, value, None)


def _settle(futures: list[asyncio.Future[V | None]], value: V | None, error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # a waiter cancelled meanwhile (shutdown) is skipped
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def each_on_failure(
    load_many: LoadMany[K, V], load_one: Callable[[K], Awaitable[V | None]]
) -> LoadMany[K, V]:
    """`load_many`; when it fails with a retryable error for several keys, each key is loaded on its
    own, so one unlucky request (or one key the upstream chokes on) fails only the rows it must."""

    async def load(keys: Sequence[K]) -> Mapping[K, V | BaseException]:
        try:
            return await load_many(keys)
        except BackfillError as exc:
            if len(keys) == 1 or not exc.retryable:
                raise
        found = await asyncio.gather(*(load_one(key) for key in keys), return_exceptions=True)
        return {key: value for key, value in zip(keys, found, strict=True) if value is not None}

    return load


class Batcher(_Coalescer[K, None, V]):
    """`await load(key)` -> the value, or None when `load_many` did not return that key."""

    def __init__(self, load_many: LoadMany[K, V], max_batch: int) -> None:
        async def call_many(entries: Sequence[tuple[K, None]]) -> Mapping[K, V | BaseException]:
            return await load_many([key for key, _ in entries])

        super().__init__(call_many, max_batch, share_keys=True)

    async def load(self, key: K) -> V | None:
        return await self._call(key, None)


class WriteBatcher(_Coalescer[K, A, V]):
    """`await submit(key, arg)` -> the result for that key, None when `write_many` returned none, or
    the exception `write_many` returned for that key alone, raised."""

    def __init__(self, write_many: WriteMany[K, A, V], max_batch: int) -> None:
        super().__init__(write_many, max_batch, share_keys=False)

    async def submit(self, key: K, arg: A) -> V | None:
        return await self._call(key, arg)
