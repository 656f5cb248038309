"""Agent Zero's outages are waited out, not retried through: its NATS link cut until its client gives up
for good (503 "NATS controller not ready" until it restarts), the circuit holds the republish, probes
its health with backoff and lets it go once Agent Zero is back. Real NATS, a relay whose link is cut,
the Agent Zero double over loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from backfill.core.circuit import State
from backfill.core.outcome import Ack, Retry
from backfill.core.wire import Mode, new_request
from backfill_doubles.agent_zero import AgentZeroDouble
from backfill_doubles.linkcut import LinkCut
from tests.support.pipeline import pipeline_rig

VERSION = "2025-10-14"


async def until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        await asyncio.sleep(0.02)


async def test_a_republish_waits_out_agent_zero_giving_up_on_nats_and_goes_on_after_its_restart(
    nats_url: str, contracts_dir: Path
) -> None:
    """Link cut until Agent Zero gives up (2 reconnects), link back: it still answers 503. The republish
    is held at the open circuit, no retry, while the probes back off; after Agent Zero restarts the
    next probe lets it through: done, one envelope."""
    port = int(nats_url.rsplit(":", 1)[1])
    async with LinkCut(port) as link:
        agent = AgentZeroDouble(link.url, contracts_dir, reconnect_attempts=2, reconnect_wait=0.1)
        async with pipeline_rig(nats_url, contracts_dir, timeout=1.0, agent=agent) as rig:
            await until(lambda: agent.nats_connected, "Agent Zero connected through the relay")
            await link.cut()
            await until(lambda: agent.gave_up, "Agent Zero gave up reconnecting")
            await link.restore()
            item = rig.jellyfin.add_item("Night Drive", run_time_ticks=600_000_000)
            row = rig.db.add_row(
                title="Night Drive",
                status="published",
                content_url="s3://a/b.mp4",
                meta={"jellyfin_item_id": item["Id"]},
            )
            request = new_request(int(row["id"]), VERSION, Mode.REPUBLISH, "run-t")
            handling = asyncio.ensure_future(rig.processor.handle(request, attempt=1))
            await until(lambda: rig.circuit.state is State.OPEN, "the circuit opened")
            probed = agent.health_checks
            await until(lambda: agent.health_checks >= probed + 3, "three probes while it stays out")
            assert not handling.done()  # held: neither a retry nor a dead letter
            assert agent.envelopes == [] and not agent.nats_connected  # still out: it never reconnects alone
            await agent.close()  # the operator restarts agent-zero
            await agent.start()
            outcome = await asyncio.wait_for(handling, 10)
    assert outcome == Ack("done", "republished", ("jellyfin_id",))
    assert len(agent.envelopes) == 1
    assert rig.circuit.state is State.CLOSED


async def test_a_worker_stopping_during_an_outage_hands_back_what_it_holds_at_once(
    nats_url: str, contracts_dir: Path
) -> None:
    """Agent Zero unreachable: the republish waits at the open circuit; the worker stopping ends that
    wait at once with a retry (its message goes back to JetStream), not after the shutdown grace."""
    agent = AgentZeroDouble(None, contracts_dir)  # no NATS at all: 503 not ready, health disconnected
    async with pipeline_rig(nats_url, contracts_dir, timeout=1.0, agent=agent) as rig:
        item = rig.jellyfin.add_item("Night Drive", run_time_ticks=600_000_000)
        row = rig.db.add_row(
            title="Night Drive",
            status="published",
            content_url="s3://a/b.mp4",
            meta={"jellyfin_item_id": item["Id"]},
        )
        request = new_request(int(row["id"]), VERSION, Mode.REPUBLISH, "run-t")
        handling = asyncio.ensure_future(rig.processor.handle(request, attempt=1))
        await until(lambda: rig.circuit.state is State.OPEN, "the circuit opened")
        rig.circuit.stop()
        outcome = await asyncio.wait_for(handling, 2)
    assert isinstance(outcome, Retry) and "stopping while Agent Zero cannot publish" in outcome.error
    assert outcome.paced > 0  # the time held is not counted as retrying
