"""`producer pause` / `resume` with real workers on both servers PMOVES may run: nats-server 2.10 (no
consumer pause: the workers honour the pause switch) and the current one (the consumer pauses too).

While paused no row is written, every worker reports `backfill_paused 1` and `status` says paused;
after resume every row is written.
"""

from __future__ import annotations

import json

import httpx
import pytest

from backfill_doubles.stack import EmbeddedStack, StackOptions
from tests.e2e.conftest import run_cli
from tests.e2e.processes import WorkerProcess, eventually

pytestmark = pytest.mark.slow


@pytest.fixture(params=["2.10", "current"])
def server_url(request: pytest.FixtureRequest) -> str:
    fixture = "old_nats_url" if request.param == "2.10" else "nats_url"
    url: str = request.getfixturevalue(fixture)
    return url


def paused_gauge(worker: WorkerProcess) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    values = [line.split()[-1] for line in text.splitlines() if line.startswith("backfill_paused ")]
    return float(values[0]) if values else None


def written(stack: EmbeddedStack) -> int:
    return sum(1 for row in stack.catalog.rows.values() if (row["meta"] or {}).get("backfill_version"))


async def test_no_row_is_written_while_paused_and_every_row_after_resume(
    server_url: str, layout_env: dict[str, str]
) -> None:
    with EmbeddedStack(StackOptions(size=26, nats_url=server_url, contracts_dir=None)) as stack:
        env = stack.env(**layout_env, BACKFILL_PACE_PER_MINUTE="0")
        expected = sum(1 for r in stack.rows.values() if r.expect == "republished")
        workers = [await WorkerProcess(env).start() for _ in range(2)]
        await eventually(lambda: all(paused_gauge(w) == 0.0 for w in workers), 60, "workers serving 0")

        paused = await run_cli("producer", ["pause"], env)
        assert paused.code == 0, paused.stdout + paused.stderr
        assert " paused: " in paused.stdout
        await eventually(lambda: all(paused_gauge(w) == 1.0 for w in workers), 10, "every worker paused")

        enqueued = await run_cli("producer", ["enqueue", "--all-missing", "--json"], env)
        assert enqueued.code == 0, enqueued.stderr
        assert json.loads(enqueued.stdout.splitlines()[-1])["enqueued"] >= expected
        status = await run_cli("producer", ["status", "--json", "--sample", "3"], env)  # 3 s paused
        assert status.code == 0, status.stderr
        assert json.loads(status.stdout)["paused"] is True
        assert written(stack) == 0

        resumed = await run_cli("producer", ["resume"], env)
        assert resumed.code == 0, resumed.stdout + resumed.stderr
        await eventually(lambda: written(stack) == expected, 60, "every row written after resume")
        # the server's pause is read again as soon as the switch changes, not at the next stats refresh (15 s)
        await eventually(lambda: all(paused_gauge(w) == 0.0 for w in workers), 5, "every worker resumed")
        status = await run_cli("producer", ["status", "--json", "--sample", "0"], env)
        assert json.loads(status.stdout)["paused"] is False
        for worker in workers:
            worker.terminate()
        assert [await w.wait(30) for w in workers] == [0, 0]
