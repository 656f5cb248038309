"""Global pace with real worker processes: three replicas together stay at the configured rate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from backfill.adapters.jetstream.bus import key_value_bucket
from backfill_doubles.stack import EmbeddedStack, StackOptions
from bench.harness import UpstreamsProcess
from tests.e2e.conftest import run_cli
from tests.e2e.processes import WorkerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstreams(nats_url: str) -> Iterator[UpstreamsProcess]:
    """Light PostgREST, Jellyfin and Agent Zero in their own process (the benchmark's): fast enough that
    the pace, not the machine, limits three workers at 100/s, and timestamping each post on arrival.
    Its Agent Zero publishes the envelopes on the test's NATS, where the workers confirm them."""
    process = UpstreamsProcess(catalog_ms=2, jellyfin_ms=2, agent_ms=2, nats_url=nats_url).start()
    yield process
    process.stop()


# A republish reaches Agent Zero some time after the pace granted its token: the bucket's write, the
# hand-out to the waiting message, one HTTP request. How long varies with the machine's load (on a busy
# 2-core machine, by tens of milliseconds), so counted where they arrive, tokens granted within a window of
# `window + DELIVERY_JITTER` seconds can land within `window`. The pace itself is checked exactly, on its
# own record of what it granted and when (`granted`).
DELIVERY_JITTER = 0.25


@dataclass
class Grant:
    at: float  # the bucket's clock when the tokens were taken (BucketState.updated)
    tokens: int


def granted(states: list[tuple[float, float]], burst: int, rate: float) -> list[Grant]:
    """What each write of the bucket took: the level it refilled to, less the level it left."""
    grants, level, last = [], float(burst), None
    for updated, tokens in states:
        if last is not None:
            level = min(float(burst), level + (updated - last) * rate)
        grants.append(Grant(updated, round(level - tokens)))
        level, last = tokens, updated
    return grants


def most_within(times: list[float], window: float, counts: list[int] | None = None) -> int:
    """The most events (or their counts) in any window of `window` seconds starting at an event."""
    counts = counts or [1] * len(times)
    return max(
        sum(c for t, c in zip(times, counts, strict=True) if start <= t < start + window) for start in times
    )


@asynccontextmanager
async def bucket_record(nats_url: str, bucket: str) -> AsyncIterator[list[tuple[float, float]]]:
    """Every state the pace bucket goes through while the block runs: (updated, tokens), in order."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    states: list[tuple[float, float]] = []
    kv = await key_value_bucket(js, bucket, "pace", "backfill republish pace")  # as the workers open it
    watcher = await kv.watch("republish", include_history=True)

    async def follow() -> None:
        async for entry in watcher:
            if entry is not None and entry.value:
                state = json.loads(entry.value)
                states.append((state["updated"], state["tokens"]))

    task = asyncio.create_task(follow())
    try:
        yield states
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.stop()
        await nc.drain()


@pytest.mark.parametrize(
    ("rate", "burst", "steady", "window"),
    [
        pytest.param(0.5, 2, 10, 4.0, id="0.5/s"),  # Discord's 30 a minute: a token every 2 s
        pytest.param(5.0, 5, 60, 2.0, id="5/s"),
        pytest.param(100.0, 20, 600, 1.0, id="100/s"),
    ],
)
async def test_three_replicas_share_one_pace(
    nats_url: str, upstreams: UpstreamsProcess, rate: float, burst: int, steady: int, window: float
) -> None:
    """3 workers at one pace. What the pace granted (the bucket's own record): one token per republish,
    never more than burst + rate x window in any window. Where the republishes arrive: the rate after
    the burst within ±10 % of it, and no window holding more than the grants of that window stretched by
    the delivery jitter (DELIVERY_JITTER)."""
    rows = burst + steady
    await upstreams.seed(rows)
    env = upstreams.env(
        nats_url,
        f"pace-{uuid.uuid4().hex[:8]}",
        BACKFILL_PACE_PER_MINUTE=str(rate * 60),
        BACKFILL_PACE_BURST=str(burst),
    )
    ran = await run_cli("producer", ["enqueue", "--all-missing"], env)
    assert ran.code == 0, ran.stderr
    async with bucket_record(nats_url, env["BACKFILL_PACE_BUCKET"]) as states:
        workers = [await WorkerProcess(env, "--exit-when-idle", "3").start() for _ in range(3)]
        assert [await w.wait(rows / rate + 90) for w in workers] == [0, 0, 0]
    times = await upstreams.publish_times()
    await upstreams.close_session()
    assert len(times) == rows
    grants = granted(states, burst, rate)
    assert sum(g.tokens for g in grants) == rows, "one token per republish, none lost or spent twice"
    paced = most_within([g.at for g in grants], window, [g.tokens for g in grants])
    after_burst = times[burst:]  # the initial burst is allowed on top of the rate
    measured = (len(after_burst) - 1) / (after_burst[-1] - after_burst[0])
    arrived = most_within(times, window)
    print(
        f"pace {rate}/s: {rows} republishes, {measured:.3f}/s after the burst; most in {window} s: "
        f"granted {paced}, arrived {arrived}"
    )
    assert paced <= burst + rate * window + 1e-9, f"the pace granted {paced} tokens in one {window} s window"
    assert abs(measured - rate) / rate <= 0.10, f"measured {measured:.3f}/s"
    assert arrived <= burst + rate * (window + DELIVERY_JITTER), f"{arrived} arrived in one {window} s window"


async def test_metadata_only_work_never_waits_for_the_pace(
    nats_url: str, contracts_dir: Path, layout_env: dict[str, str]
) -> None:
    """A metadata-only run with a pace of 1 per minute completes without taking a single pace token."""
    from nats.js.errors import NotFoundError

    with EmbeddedStack(StackOptions(size=26, nats_url=nats_url, contracts_dir=contracts_dir)) as stack:
        env = stack.env(**layout_env, BACKFILL_PACE_PER_MINUTE="1", BACKFILL_PACE_BURST="1")
        ran = await run_cli("producer", ["enqueue", "--all-missing", "--mode", "metadata-only"], env)
        assert ran.code == 0, ran.stderr
        worker = await WorkerProcess(env, "--exit-when-idle", "2").start()
        assert await worker.wait(60) == 0
        done = sum(1 for r in stack.catalog.rows.values() if (r["meta"] or {}).get("backfill_version"))
        assert done == sum(1 for r in stack.rows.values() if r.expect == "republished")
        nc = await nats.connect(stack.nats_url)
        kv = await nc.jetstream().key_value(layout_env["BACKFILL_PACE_BUCKET"])
        with pytest.raises(NotFoundError):
            await kv.get("republish")  # nobody ever took a token
        await nc.drain()
