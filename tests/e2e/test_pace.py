"""Global pace with real worker processes: three replicas together stay at the configured rate."""

from __future__ import annotations

import time
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from backfill_doubles.stack import EmbeddedStack, StackOptions
from tests.e2e.conftest import run_cli
from tests.e2e.processes import WorkerProcess

pytestmark = pytest.mark.slow
RATE, BURST = 5.0, 5


async def test_three_replicas_share_one_pace(
    nats_url: str, contracts_dir: Path, layout_env: dict[str, str]
) -> None:
    """3 workers, 5 republishes/s configured, ~60 s of work: global rate within ±10 %, bursts bounded."""
    with EmbeddedStack(StackOptions(size=500, nats_url=nats_url, contracts_dir=contracts_dir)) as stack:
        env = stack.env(**layout_env, BACKFILL_PACE_PER_MINUTE=str(RATE * 60), BACKFILL_PACE_BURST=str(BURST))
        times: list[float] = []
        nc = await nats.connect(stack.nats_url)

        async def on_envelope(_msg: Msg) -> None:
            times.append(time.monotonic())

        await nc.subscribe("content.published.v1", cb=on_envelope)
        await nc.flush()
        ran = await run_cli("producer", ["enqueue", "--all-missing"], env)
        assert ran.code == 0, ran.stderr
        workers = [await WorkerProcess(env, "--exit-when-idle", "3").start() for _ in range(3)]
        assert [await w.wait(150) for w in workers] == [0, 0, 0]
        await nc.drain()
    expected = sum(1 for r in stack.rows.values() if r.expect == "republished")
    assert len(times) == expected
    steady = times[BURST:]  # the initial burst is allowed on top of the rate
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    worst = max(sum(1 for t in times if start <= t < start + 2.0) for start in times)
    print(f"pace: {len(times)} republishes, {rate:.3f}/s steady, worst 2 s window {worst}")
    assert abs(rate - RATE) / RATE <= 0.10, f"measured {rate:.2f}/s"
    # the token bucket allows burst + rate * 2 s; +1 for delivery jitter between Agent Zero and this listener
    assert worst <= BURST + 2 * RATE + 1, f"{worst} republishes in one 2-second window"


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
