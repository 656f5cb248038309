"""Agent Zero as PMOVES runs it, with real processes: killed right after it publishes and right after it
answers, and cut off from NATS until its client gives up for good. Every row ends with exactly one
envelope on NATS, none is dead-lettered, and the workers say why they wait while Agent Zero is out."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from backfill.core.payload import correlation_id
from backfill_doubles.linkcut import LinkCut
from backfill_doubles.stack import EmbeddedStack
from tests.e2e.conftest import Envelopes
from tests.e2e.processes import WorkerProcess, eventually
from tests.e2e.test_delivery import VERSION, dlq_reasons, enqueue, resolvable
from tests.support.agentzero import AgentZeroProcess

pytestmark = pytest.mark.slow
# How long these workers wait for an envelope and between probes of a missing Agent Zero (seconds).
TIMINGS = {
    "BACKFILL_ENVELOPE_WAIT_SECONDS": "1",
    "BACKFILL_AGENT_ZERO_PROBE_SECONDS": "0.2",
    "BACKFILL_AGENT_ZERO_PROBE_MAX_SECONDS": "1",
}


@pytest.fixture
async def agent_zero(stack: EmbeddedStack) -> AsyncIterator[AgentZeroProcess]:
    agent = AgentZeroProcess(stack.nats_url)
    yield agent
    await agent.stop()


def one_envelope_each(stack: EmbeddedStack, envelopes: Envelopes, rows: list[int]) -> None:
    """Every row got exactly one envelope, and its meta names that envelope."""
    counts = Counter(envelope["correlation_id"] for envelope in envelopes.seen)
    by_row = {envelope["correlation_id"]: envelope["id"] for envelope in envelopes.seen}
    wrong = {
        row: counts[correlation_id(row, VERSION)] for row in rows if counts[correlation_id(row, VERSION)] != 1
    }
    assert not wrong, f"rows without exactly one envelope: {wrong}"
    for row in rows:
        assert stack.catalog.rows[row]["meta"]["backfill_event_id"] == by_row[correlation_id(row, VERSION)]


async def test_agent_zero_killed_after_publishing_and_after_answering_leaves_every_row_one_envelope(
    stack: EmbeddedStack, envelopes: Envelopes, agent_zero: AgentZeroProcess, layout_env: dict[str, str]
) -> None:
    """Six SIGKILLs of Agent Zero, each at one of its two crash windows: after publishing (envelope
    out, no answer: a retry would publish twice) and after answering (200 out, envelope lost: the row
    would be done without its embed). Two replicas; no row lost, none doubled, none dead-lettered."""
    # Paced (10 a second, one at a time) so that each start of Agent Zero meets its third publish while
    # most rows still wait: unpaced, a fast run could finish every row before the sixth kill comes.
    env = stack.env(
        **layout_env,
        **TIMINGS,
        AGENT_ZERO_BASE_URL=agent_zero.url,
        BACKFILL_PACE_PER_MINUTE="600",
        BACKFILL_PACE_BURST="1",
    )
    rows = resolvable(stack)[:40]
    await enqueue(stack, env, "--ids", ",".join(map(str, rows)))
    workers = [await WorkerProcess(env, "--exit-when-idle", "4").start() for _ in range(2)]
    for moment in ["publish", "answer"] * 3:
        await agent_zero.restart(f"--die-after-{moment}", "3")  # its third publish
        assert await agent_zero.exited(60) == -signal.SIGKILL, (
            f"Agent Zero was not killed after it {moment}ed"
        )
    await agent_zero.restart()
    assert [await w.wait(120) for w in workers] == [0, 0], [w.stderr[-3000:] for w in workers]
    one_envelope_each(stack, envelopes, rows)
    assert await dlq_reasons(stack, layout_env) == Counter()


async def test_agent_zero_cut_from_nats_past_its_give_up_is_waited_out_and_the_run_completes_after_a_restart(
    stack: EmbeddedStack, envelopes: Envelopes, layout_env: dict[str, str]
) -> None:
    """Agent Zero's NATS link cut longer than its reconnects last (3 x 0.2 s here, 60 x 2 s in PMOVES),
    then back: it answers 503 "not ready" for good. With 3 deliveries and a 4 s retry budget, an outage
    of 6 s would dead-letter every waiting row if retried through; the workers hold them instead, say so
    in `backfill_agent_zero_unavailable` (the alert's condition), and finish once Agent Zero restarts."""
    port = int(stack.nats_url.rsplit(":", 1)[1])
    async with LinkCut(port) as link:
        agent = AgentZeroProcess(link.url, "--reconnect-attempts", "3", "--reconnect-wait", "0.2")
        await agent.start()
        try:
            env = stack.env(
                **layout_env,
                **TIMINGS,
                AGENT_ZERO_BASE_URL=agent.url,
                BACKFILL_MAX_DELIVER="3",
                BACKFILL_RETRY_BUDGET_SECONDS="4",
                BACKFILL_PACE_PER_MINUTE="600",  # 10/s: the outage comes while most rows still wait
                BACKFILL_PACE_BURST="1",
            )
            rows = resolvable(stack)[:40]
            await enqueue(stack, env, "--ids", ",".join(map(str, rows)))
            workers = [await WorkerProcess(env, "--exit-when-idle", "4").start() for _ in range(2)]
            await eventually(lambda: len(envelopes.seen) >= 5, what="some rows republished before the cut")
            await link.cut()
            await eventually(lambda: agent_nats(agent, connected=False), what="Agent Zero lost NATS")
            await asyncio.sleep(2.0)  # the outage itself, well past its 3 reconnects 0.2 s apart
            await link.restore()
            await eventually(lambda: unavailable(workers, 1), what="a worker reports Agent Zero unavailable")
            await asyncio.sleep(6.0)  # the outage goes on past the retry budget (4 s) and 3 deliveries
            assert await agent_nats(agent, connected=False), "Agent Zero reconnected by itself"
            assert await dlq_reasons(stack, layout_env) == Counter()
            done_before_restart = len(envelopes.seen)
            await agent.restart()  # the runbook's fix
            await eventually(lambda: unavailable(workers, 0), what="the workers resumed by themselves")
            assert [await w.wait(120) for w in workers] == [0, 0], [w.stderr[-3000:] for w in workers]
        finally:
            await agent.stop()
    assert done_before_restart < len(rows)
    one_envelope_each(stack, envelopes, rows)
    assert await dlq_reasons(stack, layout_env) == Counter()


async def agent_nats(agent: AgentZeroProcess, *, connected: bool) -> bool:
    """Whether Agent Zero's /healthz reports its NATS link as `connected`."""
    async with aiohttp.ClientSession() as session, session.get(f"{agent.url}/healthz") as response:
        return bool((await response.json())["nats"]["connected"]) is connected


async def unavailable(workers: list[WorkerProcess], value: int) -> bool:
    """Whether `backfill_agent_zero_unavailable` is `value` on every worker (1: on at least one)."""
    seen = []
    async with aiohttp.ClientSession() as session:
        for worker in workers:
            async with session.get(f"http://127.0.0.1:{worker.metrics_port}/metrics") as response:
                text = await response.text()
            line = next(x for x in text.splitlines() if x.startswith("backfill_agent_zero_unavailable "))
            seen.append(float(line.split()[1]))
    return any(v == 1 for v in seen) if value == 1 else all(v == 0 for v in seen)
