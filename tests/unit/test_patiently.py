"""A worker's start-up steps (layout, ledger, pause switch, pace bucket) wait out a JetStream that is
not ready, stop when asked, and give up at once on what waiting cannot fix."""

from __future__ import annotations

import asyncio

import pytest

from backfill.core.errors import BusError, StreamConfigConflict
from worker.service import patiently


async def test_a_step_is_retried_until_jetstream_answers() -> None:
    calls: list[int] = []

    async def step() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise BusError("no responders: leader election")
        return 7

    assert await patiently(step, asyncio.Event(), first_delay=0.001) == 7
    assert len(calls) == 3


async def test_a_stop_ends_the_wait_with_none() -> None:
    stop = asyncio.Event()
    tried = asyncio.Event()

    async def step() -> int:
        tried.set()
        raise BusError("JetStream not ready")

    waiting = asyncio.create_task(patiently(step, stop, first_delay=60.0))
    await tried.wait()
    stop.set()
    assert await asyncio.wait_for(waiting, 5) is None


async def test_a_config_conflict_is_not_waited_out() -> None:
    async def step() -> int:
        raise StreamConfigConflict("stream BACKFILL exists with other retention")

    with pytest.raises(StreamConfigConflict):
        await patiently(step, asyncio.Event(), first_delay=0.001)
