"""A long paced run in a hostile world, with real processes: rows wait in the queue longer than the retry
budget, the catalog answers 503 to a quarter of its requests (PGRST002, the merges included) and Agent
Zero "not ready" to a tenth, four poison messages sit among the requests, two replicas share the work."""

from __future__ import annotations

import json
from collections import Counter

import nats
import pytest
from nats.aio.msg import Msg

from backfill.core.deadletter import header_value
from backfill.core.wire import Mode, encode_request, new_request
from backfill_doubles.stack import EmbeddedStack
from tests.e2e.conftest import run_cli
from tests.e2e.processes import WorkerProcess
from tests.e2e.test_delivery import VERSION, resolvable
from tests.e2e.test_pipeline import read_stream

pytestmark = pytest.mark.slow
ROWS = 150


async def test_a_slow_paced_run_through_faults_and_poison_enriches_every_row_with_one_event(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """150 of 150 rows enriched, one envelope each, only the four poison messages dead-lettered: a
    transient 503 costs a request (merges are made again within the delivery), not the row."""
    env = stack.env(
        **layout_env,
        BACKFILL_PACE_PER_MINUTE="360",  # 150 rows take ~25 s: the last wait more than twice the budget
        BACKFILL_PACE_BURST="2",
        BACKFILL_RETRY_BUDGET_SECONDS="10",
        # Four deliveries: each fault-prone step (read, merge, publish) spending one per 503 would
        # dead-letter rows here; a 503 must cost a request within the delivery instead.
        BACKFILL_MAX_DELIVER="4",
    )
    prefix = layout_env["BACKFILL_SUBJECT_PREFIX"]
    rows = resolvable(stack)[:ROWS]
    events: Counter[str] = Counter()
    listener = await nats.connect(stack.nats_url)

    async def on_event(msg: Msg) -> None:
        events[json.loads(msg.data)["correlation_id"]] += 1

    await listener.subscribe("content.published.v1", cb=on_event)
    await listener.flush()
    enqueued = await run_cli("producer", ["enqueue", "--ids", ",".join(map(str, rows))], env)
    assert enqueued.code == 0, enqueued.stderr
    poison = {
        f"{prefix}.request.\u00b2": encode_request(new_request(2, VERSION, Mode.REPUBLISH, "poison")),
        f"{prefix}.request.{2**63}": json.dumps(
            {
                "row_id": 2**63,
                "backfill_version": VERSION,
                "mode": "republish",
                "run_id": "poison",
                "enqueued_at": "2025-01-01T00:00:00Z",
            }
        ).encode(),
        f"{prefix}.request.777001": b"\xff\xfe not a request \x00",
        f"{prefix}.request.777002": encode_request(new_request(4, VERSION, Mode.REPUBLISH, "poison")),
    }
    for subject, body in poison.items():
        await listener.jetstream().publish(subject, body)
    stack.catalog.fail_rate = 0.25
    stack.agent.fail_rate = 0.10
    workers = [await WorkerProcess(env, "--exit-when-idle", "4").start() for _ in range(2)]
    codes = [await worker.wait(300) for worker in workers]
    stack.catalog.fail_rate = stack.agent.fail_rate = 0.0
    await listener.flush()
    await listener.drain()

    assert codes == [0, 0], [w.stderr[-3000:] for w in workers]
    assert stack.catalog.injected and stack.agent.injected, "the faults under test were not injected"
    merges_sent = sum(1 for _, path, _ in stack.catalog.requests if "/rpc/" in path)
    assert merges_sent > stack.catalog.calls["rpc"], "no merge was refused with a 503"
    dead = await read_stream(stack.nats_url, layout_env["BACKFILL_DLQ_STREAM"])
    details = [(m.headers["Backfill-Reason"], m.headers["Backfill-Detail"]) for m in dead]
    assert Counter(reason for reason, _ in details) == Counter({"invalid_message": 4}), details
    assert all(stack.catalog.rows[r]["meta"].get("jellyfin_public_url") for r in rows)
    assert len(events) == ROWS and set(events.values()) == {1}  # one event per row, never two
    assert {m.headers["Backfill-Original-Subject"] for m in dead} == {header_value(s) for s in poison}
    listed = await run_cli("producer", ["dlq", "list", "--json"], env)
    assert listed.code == 0, listed.stderr
    assert json.loads(listed.stdout)["total"] == 4
