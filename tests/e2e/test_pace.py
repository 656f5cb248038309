"""Global pace with real worker processes: three replicas together stay at the configured rate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

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


@pytest.mark.parametrize(
    ("rate", "burst", "steady", "window"),
    [
        pytest.param(0.5, 2, 20, 4.0, id="0.5/s"),  # Discord's 30 a minute: a token every 2 s
        pytest.param(5.0, 5, 150, 2.0, id="5/s"),
        pytest.param(100.0, 20, 1500, 1.0, id="100/s"),
    ],
)
async def test_three_replicas_share_one_pace(
    nats_url: str, upstreams: UpstreamsProcess, rate: float, burst: int, steady: int, window: float
) -> None:
    """3 workers at one pace: the global rate after the burst is within ±10 % of it, and no window holds
    more than burst + rate x window (+1 for delivery jitter between a worker and Agent Zero)."""
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
    workers = [await WorkerProcess(env, "--exit-when-idle", "3").start() for _ in range(3)]
    assert [await w.wait(rows / rate + 90) for w in workers] == [0, 0, 0]
    times = await upstreams.publish_times()
    await upstreams.close_session()
    assert len(times) == rows
    after_burst = times[burst:]  # the initial burst is allowed on top of the rate
    measured = (len(after_burst) - 1) / (after_burst[-1] - after_burst[0])
    worst = max(sum(1 for t in times if start <= t < start + window) for start in times)
    print(
        f"pace {rate}/s: {len(times)} republishes, {measured:.3f}/s after the burst, worst {window} s: {worst}"
    )
    assert abs(measured - rate) / rate <= 0.10, f"measured {measured:.3f}/s"
    assert worst <= burst + rate * window + 1, f"{worst} republishes in one {window}-second window"


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
