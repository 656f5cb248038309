"""The watcher's cost per pass (`--only watch`): an idle pass on a large catalog against a full one.

The passes run in this process, on the real adapters (JetStream, the catalog over HTTP to the light
upstreams, Jellyfin likewise), one after another with nothing else running here, so the process's CPU
time across a pass is the pass's. Requests: the upstreams count what they answer (catalog, Jellyfin);
NATS messages are what the watcher's connection sent (JetStream API requests, key-value reads and
writes, publishes). No worker runs: the rows stay candidates, their requests pending in the stream.

1. the first pass, from id 0: every candidate is read and enqueued (the rows with a dead letter left out);
2. idle passes: nothing above the high-water mark, the dead letters unchanged, Jellyfin reporting
   nothing saved since (median of several);
3. a pass after `new_rows` rows were added above the mark;
4. a full pass: every candidate read again and published (each one already pending).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from backfill.adapters.jellyfin import JellyfinClient
from backfill.adapters.jetstream.bus import AckPublisher, Bus
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.watchstate import WatchState
from backfill.adapters.postgrest import PostgrestCatalog
from backfill.adapters.transport import make_client
from backfill.core.deadletter import DeadLetterIndex
from backfill.core.watch import ReplayPolicy
from backfill.core.wire import Mode
from bench.harness import UpstreamsProcess
from bench.upstreams import API_KEY, SERVICE_KEY, USER_ID
from producer.watch_pass import PassOptions, PassTools, WatchPass

BUCKET = "BENCH_WATCH_STATE"


class Always:
    """The pass is never asked to stop (no SIGTERM, the lease always held)."""

    async def proceed(self) -> bool:
        return True


async def measure_pass(
    runner: WatchPass, bus: Bus, upstreams: UpstreamsProcess, *, full: bool = False
) -> dict[str, Any]:
    """One pass: its CPU and wall time, the requests it caused, what it enqueued."""
    before = (await upstreams.stats())["requests"]
    sent, cpu, wall = bus.messages_sent, time.process_time(), time.perf_counter()
    record, _ = await runner.run(None, force_full=full)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = (await upstreams.stats())["requests"]
    requests = {
        service: after.get(service, 0) - before.get(service, 0) for service in ("catalog", "jellyfin")
    }
    nats = bus.messages_sent - sent  # the stats calls above go over HTTP, not NATS
    return {
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "catalog_requests": requests["catalog"],
        "jellyfin_requests": requests["jellyfin"],
        "nats_messages": nats,
        "requests_total": requests["catalog"] + requests["jellyfin"] + nats,
        "enqueued": sum(record.enqueued.values()),
        "already_pending": record.already_pending,
        "left_out": sum(record.left_out.values()),
    }


def median_pass(passes: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(p[key] for p in passes) for key in passes[0]}


async def watch_section(
    upstreams: UpstreamsProcess,
    nats_url: str,
    layout: Layout,
    *,
    rows: int,
    dead_letters: int,
    new_rows: int,
    idle_passes: int,
) -> dict[str, Any]:
    """The section's results: each pass measured, how, and the full pass against the idle one."""
    passes = await measure_passes(upstreams, nats_url, layout, new_rows=new_rows, idle_passes=idle_passes)
    idle, full = passes["idle_pass"], passes["full_pass"]
    return {
        "how": (
            f"{rows} candidate rows in the light PostgREST, {dead_letters} of them with a "
            "jellyfin_not_found dead letter, no worker running; `producer watch`'s passes run one after "
            "another in the benchmark's process on the real adapters (bench/watch.py): the first from id 0, "
            f"the median of {idle_passes} idle ones (nothing new, Jellyfin reporting nothing saved since), "
            f"one after {new_rows} rows were added, and a full pass (every candidate published again, each "
            "already pending). CPU = the process's CPU time across the pass; requests = what the catalog "
            "and Jellyfin answered plus the messages the watcher's NATS connection sent (JetStream API, "
            "key-value reads and writes, publishes)."
        ),
        "rows": rows,
        "dead_letters": dead_letters,
        **passes,
        "full_vs_idle_cpu": full["cpu_seconds"] / max(idle["cpu_seconds"], 1e-9),
        "full_vs_idle_requests": full["requests_total"] / max(idle["requests_total"], 1),
    }


def watch_lines(watch: dict[str, Any]) -> list[str]:
    """The section's lines of the printed table."""
    lines = [f"watch pass ({watch['rows']} rows)  CPU s  wall s  catalog  jellyfin  NATS  enqueued  left out"]
    for key, label in (
        ("first_pass", "first (from id 0)"),
        ("idle_pass", "idle (median)"),
        ("new_rows_pass", "new rows"),
        ("full_pass", "full"),
    ):
        p = watch[key]
        times = f"{p['cpu_seconds']:>6.3f} {p['wall_seconds']:>7.3f}"
        requests = f"{p['catalog_requests']:>8.0f} {p['jellyfin_requests']:>9.0f} {p['nats_messages']:>5.0f}"
        lines.append(f"  {label:<21} {times} {requests} {p['enqueued']:>9.0f} {p['left_out']:>9.0f}")
    cpu, requests = watch["full_vs_idle_cpu"], watch["full_vs_idle_requests"]
    lines.append(f"  full vs idle: {cpu:.0f}x the CPU, {requests:.0f}x the requests")
    return lines


async def measure_passes(
    upstreams: UpstreamsProcess,
    nats_url: str,
    layout: Layout,
    *,
    new_rows: int,
    idle_passes: int,
) -> dict[str, Any]:
    bus = await Bus.connect(nats_url, "bench-watch", reconnect_forever=False)
    http = make_client(30.0)
    publisher = AckPublisher(bus.nc)
    try:
        tools = PassTools(
            bus.js,
            layout,
            publisher,
            PostgrestCatalog(http, f"{upstreams.url}/rest", SERVICE_KEY),
            JellyfinClient(http, f"{upstreams.url}/jellyfin", API_KEY, USER_ID),
            await WatchState.open(bus.js, BUCKET, layout),
            DeadLetterIndex(),
            ReplayPolicy(max_replays=5, backoff=3600.0, backoff_max=86400.0),
        )
        options = PassOptions(Mode.METADATA_ONLY, "2025-10-14", "bench-watch", None, 1e9, 300.0, "bench")
        runner = WatchPass(tools, options, Always())
        first = await measure_pass(runner, bus, upstreams)
        idle = [await measure_pass(runner, bus, upstreams) for _ in range(idle_passes)]
        await upstreams.append(new_rows)
        added = await measure_pass(runner, bus, upstreams)
        full = await measure_pass(runner, bus, upstreams, full=True)
        await bus.js.delete_key_value(BUCKET)
    finally:
        await publisher.close()
        await http.aclose()
        await bus.close()
    return {"first_pass": first, "idle_pass": median_pass(idle), "new_rows_pass": added, "full_pass": full}
