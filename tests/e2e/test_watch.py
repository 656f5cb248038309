"""`producer watch` with real processes: a watcher and two workers on the embedded stack (real
nats-server, the doubles over loopback), intervals of a second.

Rows inserted over time are enriched without any command; a row whose item Jellyfin lacks is
dead-lettered once, not on every pass, and enriched on its own once the item appears; an ambiguous row
stays in the dead letters and `status` counts it; a second watcher waits (and says so); SIGKILL the
first and the second takes over, losing no row and enqueueing none twice. On nats-server 2.15 and on
2.10, PMOVES' release.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.js.errors
import pytest

from backfill.core.payload import correlation_id
from backfill_doubles.stack import EmbeddedStack, StackOptions
from tests.e2e.conftest import Envelopes, run_cli
from tests.e2e.processes import WatcherProcess, WorkerProcess, eventually, read_stream

pytestmark = pytest.mark.slow
VERSION = "2025-10-14"
WATCH = {
    "BACKFILL_WATCH_INTERVAL": "1",
    "BACKFILL_WATCH_FULL_EVERY": "3",
    "BACKFILL_WATCH_LEASE_SECONDS": "2",
    "BACKFILL_WATCH_REPLAY_BACKOFF": "3600",  # replays here come from Jellyfin's changes, not the clock
}


@pytest.fixture(params=["nats_url", "old_nats_url"], ids=["2.15", "2.10"])
def stack(request: pytest.FixtureRequest, contracts_dir: Path) -> Iterator[EmbeddedStack]:
    url = request.getfixturevalue(request.param)
    with EmbeddedStack(StackOptions(size=26, nats_url=url, contracts_dir=contracts_dir)) as embedded:
        yield embedded


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition, or None when it is not there."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", re.MULTILINE)
    for found_labels, value in pattern.findall(text):
        if all(part in found_labels.split(",") for part in wanted.split(",") if part):
            return float(value)
    return None


class Scene:
    def __init__(self, stack: EmbeddedStack, layout_env: dict[str, str]) -> None:
        self.stack = stack
        self.layout = layout_env
        self.env = stack.env(**layout_env, **WATCH)
        self.added: list[int] = []

    def new_row(self, title: str, *, in_jellyfin: bool = True) -> int:
        """A published row without metadata, as PMOVES' approval leaves it; its item in Jellyfin or not."""
        if in_jellyfin:
            self.stack.jellyfin.add_item(title, run_time_ticks=1_200_000_000)
        row = self.stack.catalog.add_row(
            title=title,
            status="published",
            namespace="pmoves",
            content_url=f"s3://outputs/{title}.mp4",
            meta={},
        )
        self.added.append(int(row["id"]))
        return int(row["id"])

    def enriched(self, row_id: int) -> bool:
        return self.stack.catalog.rows[row_id]["meta"].get("jellyfin_public_url") is not None

    async def stored(self) -> int:
        """Every request the work stream ever stored."""
        nc = await nats.connect(self.stack.nats_url)
        try:
            return int((await nc.jetstream().stream_info(self.layout["BACKFILL_STREAM"])).state.last_seq)
        finally:
            await nc.drain()

    async def dead_letters(self) -> Counter[int]:
        """Dead letters per row."""
        msgs = await read_stream(self.stack.nats_url, self.layout["BACKFILL_DLQ_STREAM"])
        return Counter(int(msg.headers["Backfill-Row-Id"]) for msg in msgs)

    async def dead_lettered(self, row_id: int) -> bool:
        return row_id in await self.dead_letters()

    async def high_water(self) -> int:
        """The watcher's high-water mark as saved in JetStream (0 before its first page)."""
        nc = await nats.connect(self.stack.nats_url)
        try:
            kv = await nc.jetstream().key_value(self.layout["BACKFILL_WATCH_BUCKET"])
            entry = await kv.get(f"cursor.{self.layout['BACKFILL_STREAM']}")
            return int(json.loads(entry.value or b"{}").get("high_water", 0))
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await nc.drain()

    async def marked_above(self, floor: int) -> bool:
        return await self.high_water() > floor


def passes(watcher: WatcherProcess) -> float:
    """The passes this watcher completed."""
    return sample(watcher.metrics(), "backfill_watch_passes_total", result="completed") or 0.0


async def test_a_watched_backfill_keeps_itself_done_and_survives_its_watcher(
    stack: EmbeddedStack, layout_env: dict[str, str], envelopes: Envelopes
) -> None:
    scene = Scene(stack, layout_env)
    seeded = {rid: row.expect for rid, row in stack.rows.items()}
    ambiguous = [rid for rid, expect in seeded.items() if expect == "dlq:ambiguous_match"]
    resolvable = [rid for rid, expect in seeded.items() if expect == "republished"]
    first = await WatcherProcess({**scene.env, "BACKFILL_WATCH_ID": "watch-a"}).start()
    workers = [await WorkerProcess(scene.env, "--concurrency", "8").start() for _ in range(2)]

    # Without any command: the catalog as it was, then rows approved over time.
    await eventually(lambda: all(scene.enriched(rid) for rid in resolvable), 90, "seeded rows enriched")
    for batch in range(3):
        rows = [scene.new_row(f"Fresh Film {batch}-{n}") for n in range(3)]
        await eventually(lambda rows=rows: all(scene.enriched(r) for r in rows), 60, f"batch {batch}")

    # Not in Jellyfin yet: dead-lettered once, then left alone pass after pass.
    late = scene.new_row("Late Arrival", in_jellyfin=False)
    await eventually(lambda: scene.dead_lettered(late), 60, "the late row dead-lettered")
    stored, done = await scene.stored(), passes(first)
    await eventually(lambda: passes(first) >= done + 4, 60, "four more passes, a full one among them")
    assert (await scene.dead_letters())[late] == 1
    assert await scene.stored() == stored, "a dead-lettered row was enqueued again"

    # The item appears in Jellyfin: the next pass replays the row, which is enriched.
    stack.jellyfin.add_item("Late Arrival", run_time_ticks=600_000_000)
    await eventually(lambda: scene.enriched(late), 60, "the late row enriched on its own")
    assert late not in await scene.dead_letters()

    # An ambiguous row stays, and status counts it as waiting for an operator.
    status = json.loads((await run_cli("producer", ["status", "--json", "--sample", "0"], scene.env)).stdout)
    assert status["watcher"]["holder"] == "watch-a"
    assert status["watcher"]["waiting_for_operator"]["ambiguous_match"] == len(ambiguous)
    assert status["watcher"]["next_pass_at"] is not None
    dead = await scene.dead_letters()
    assert all(dead[rid] == 1 for rid in ambiguous)

    # A second watcher waits while the first holds the lease.
    second = await WatcherProcess({**scene.env, "BACKFILL_WATCH_ID": "watch-b"}).start()
    await eventually(lambda: _waiting(second, "watch-a"), 30, "the second watcher waiting")
    assert passes(second) == 0

    # SIGKILL the first mid-stream: the second takes over; no row lost, none enqueued twice.
    rows = [scene.new_row(f"After Kill {n}") for n in range(4)]
    first.kill()
    await first.wait()
    rows += [scene.new_row(f"After Kill {n}") for n in range(4, 8)]
    await eventually(lambda: all(scene.enriched(r) for r in rows), 90, "rows after the takeover")
    await eventually(lambda: sample(second.metrics(), "backfill_watch_lease_held") == 1, 10, "lease taken")
    candidates = sum(1 for expect in seeded.values() if expect != "untouched")
    assert await scene.stored() == candidates + len(scene.added) + 1  # the late row's one replay
    republished = [*resolvable, *scene.added]
    by_row = envelopes.by_row()
    assert all(len(by_row[correlation_id(rid, VERSION)]) == 1 for rid in republished)

    second.terminate()
    assert await second.wait() == 0
    assert b"another watcher holds the watch lease" in second.stderr and b"watch-a" in second.stderr
    for worker in workers:
        worker.terminate()
    assert [await worker.wait() for worker in workers] == [0, 0]


def _waiting(watcher: WatcherProcess, holder: str) -> bool:
    text = watcher.metrics()
    return (
        sample(text, "backfill_watch_lease_held") == 0
        and sample(text, "backfill_watch_lease_holder", holder=holder) == 1
    )


async def test_sigterm_stops_between_pages_and_the_next_watcher_finishes_the_pass_at_once(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """SIGTERM mid-pass: the page in flight is finished, the mark saved, exit 0, the lease given back;
    a new watcher (lease TTL of a minute) takes over at once and enqueues the rest, none twice."""
    scene = Scene(stack, layout_env)
    env = {**scene.env, "BACKFILL_PAGE_SIZE": "3", "BACKFILL_WATCH_LEASE_SECONDS": "60"}
    stack.catalog.latency = 0.3  # a slow catalog: the pass takes seconds
    candidates = sorted(rid for rid, row in stack.rows.items() if row.expect != "untouched")
    first = await WatcherProcess(env).start()
    await eventually(lambda: scene.marked_above(0), 60, "a first page done")
    first.terminate()
    assert await first.wait(30) == 0
    stopped_at = await scene.high_water()
    assert 0 < stopped_at < candidates[-1], "the pass was not interrupted mid-way"
    assert b"SIGTERM" in first.stderr
    stack.catalog.latency = 0.0
    second = await WatcherProcess(env).start()
    await eventually(lambda: scene.marked_above(candidates[-1] - 1), 20, "the pass finished")
    assert await scene.stored() == len(candidates)
    second.terminate()
    assert await second.wait(30) == 0


async def test_once_runs_one_pass_and_refuses_when_the_lease_is_held_or_jellyfin_half_configured(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """`watch --once --json`: one pass, its record; again: nothing new. Exit 1 while another watcher
    holds the lease, exit 2 naming the variable when Jellyfin is half configured (nothing connected)."""
    scene = Scene(stack, layout_env)
    candidates = [rid for rid, row in stack.rows.items() if row.expect != "untouched"]
    ran = await run_cli("producer", ["watch", "--once", "--json"], scene.env)
    assert ran.code == 0, ran.stderr
    record = json.loads(ran.stdout)
    assert record["enqueued"] == {"new_row": len(candidates), "full_pass": 0}
    assert record["high_water"] == max(candidates) and not record["interrupted"]
    again = json.loads((await run_cli("producer", ["watch", "--once", "--json"], scene.env)).stdout)
    assert again["enqueued"] == {"new_row": 0, "full_pass": 0}
    assert await scene.stored() == len(candidates)

    holder = await WatcherProcess({**scene.env, "BACKFILL_WATCH_ID": "watch-a"}).start()
    await eventually(lambda: sample(holder.metrics(), "backfill_watch_lease_held") == 1, 30, "the lease held")
    busy = await run_cli("producer", ["watch", "--once"], scene.env)
    assert busy.code == 1 and "another watcher holds the lease" in busy.stderr
    holder.terminate()
    assert await holder.wait() == 0

    half = await run_cli("producer", ["watch", "--once"], {**scene.env, "JELLYFIN_API_KEY": ""})
    assert half.code == 2 and "JELLYFIN_API_KEY" in half.stderr
