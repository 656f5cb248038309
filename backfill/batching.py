"""Batched lookups: keys asked for in the same event-loop turn are loaded with one request.

A worker fetches several messages at once and starts one task per message; each task reads its row
and then its Jellyfin item. With a `Batcher` in front of those reads, the tasks of one fetch share one
`id=in.(...)` catalog read and one `ids=` Jellyfin lookup instead of one request each (`make bench`:
HTTP is most of a worker's CPU). The per-row code stays as it was: it awaits `load(key)`.

The batch is dispatched with `loop.call_soon` from the first `load` of a turn, so every task that
reaches its `load` in that turn joins it; nothing waits on a timer. A failed batch fails every waiter
with the same error, which each row then handles as it would its own failed request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LoadMany = Callable[[Sequence[K]], Awaitable[dict[K, V]]]


class Batcher(Generic[K, V]):
    """`await load(key)` -> the value, or None when `load_many` did not return that key."""

    def __init__(self, load_many: LoadMany[K, V], max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._load_many = load_many
        self._max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0  # how many load_many calls were made (for tests and metrics)

    async def load(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, {}
        keys = list(waiting)
        for start in range(0, len(keys), self._max_batch):
            chunk = keys[start : start + self._max_batch]
            task = asyncio.ensure_future(self._run(chunk, {key: waiting[key] for key in chunk}))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, keys: list[K], waiters: dict[K, list[asyncio.Future[V | None]]]) -> None:
        self.batches += 1
        try:
            found = await self._load_many(keys)
        except Exception as exc:  # noqa: BLE001 - not swallowed: every waiter gets it, as its own
            for futures in waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, futures in waiters.items():
            value = found.get(key)
            for future in futures:
                if not future.done():  # a waiter cancelled meanwhile (shutdown) is skipped
                    future.set_result(value)
