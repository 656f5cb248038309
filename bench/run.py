"""The benchmark: enqueue, worker throughput, the pace's cost, overhead latency, dead-letter replay, and
the watcher's cost per pass.

`make bench` (or `python -m bench`) starts its own nats-server and the light upstreams process
(`bench.upstreams`, latency per service configurable), runs every section and prints a table; the
figures and how each was measured go to `bench/results/latest.json`. Ratios only mean something within
one run: every comparison is measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats

from backfill.adapters.jetstream.bus import AckPublisher
from backfill.adapters.jetstream.layout import build_layout, ensure_layout
from backfill.core.deadletter import Failure, dead_letter_headers
from backfill.core.wire import Header, Mode, dlq_subject, encode_request, msg_id, new_request, request_subject
from backfill.settings import NatsSettings, WorkerSettings, load_settings
from backfill_doubles.natsserver import NatsServerProcess
from bench.baselines import http_ceiling, http_ceiling_batched, naive_loop, raw_publish
from bench.harness import (
    BIN,
    UpstreamsProcess,
    WorkerProcesses,
    cpu_seconds,
    environment,
    machine_busy_seconds,
    percentile,
    run_child,
)
from bench.watch import watch_lines, watch_section

RESULTS = Path(__file__).parent / "results" / "latest.json"
SECTIONS = ["enqueue", "throughput", "pace", "latency", "replay", "watch"]
DEFAULT_CONCURRENCY = int(WorkerSettings.model_fields["concurrency"].default)
DEFAULT_FETCH_BATCH = int(WorkerSettings.model_fields["fetch_batch"].default)


def best_ceiling(ceilings: dict[str, float], up_to: int | None = None) -> str:
    """The key ("128" or "128-batched") of the fastest ceiling, among those at concurrency <= `up_to`
    when given (all of them when none is)."""
    within = [k for k in ceilings if up_to is None or int(k.split("-", 1)[0]) <= up_to] or list(ceilings)
    return max(within, key=ceilings.__getitem__)


@dataclass(frozen=True)
class Sizes:
    enqueue: tuple[int, ...] = (20_000, 200_000)
    worker_rows: int = 4_000
    naive_rows: int = 60
    # The target compares with the best ceiling up to the worker's default concurrency; the ones above
    # it show how far the latency-bound raw client keeps growing (reported, for reference)
    ceiling_concurrency: tuple[int, ...] = (16, 64, 128, 256)
    worker_concurrency: tuple[int, ...] = (16, 32, 64, 128, 256)  # one worker, to choose the default
    worker_fetch_batch: tuple[int, ...] = (16, 32, 64)  # one worker at the default concurrency, likewise
    fetch_batch: int = DEFAULT_FETCH_BATCH  # rows per batched read/lookup/merge in the batched ceiling
    latency_rows: int = 400
    latency_rate: float = 40.0  # rows per second fed while measuring overhead (well below saturation)
    replay: int = 10_000
    replay_runs: int = 3
    repeats: int = 3  # runs per worker and ceiling figure (median reported)
    watch_rows: int = 100_000  # the catalog an idle watch pass is measured on
    watch_dead_letters: int = 1_000  # jellyfin_not_found dead letters among those rows
    watch_new_rows: int = 100
    watch_idle_passes: int = 10


QUICK = Sizes(
    enqueue=(500, 2_000),
    # enough rows that the CPU window (first 1 % merged to the last) spans many of /proc's 10 ms ticks
    worker_rows=1_000,
    naive_rows=5,
    ceiling_concurrency=(16,),
    worker_concurrency=(8,),
    worker_fetch_batch=(4,),
    latency_rows=30,
    latency_rate=30.0,
    replay=500,
    replay_runs=1,
    repeats=1,
    watch_rows=2_000,
    watch_dead_letters=50,
    watch_new_rows=10,
    watch_idle_passes=3,
)


class Bench:
    def __init__(
        self,
        sizes: Sizes,
        upstreams: UpstreamsProcess,
        nats_url: str,
        workdir: Path,
        profile: Path | None = None,
        server_pid: int = 0,
    ) -> None:
        """`server_pid`: the nats-server's process, whose CPU counts towards the machine's load."""
        self.profile = profile
        self.server_pid = server_pid
        self.sizes = sizes
        self.up = upstreams
        self.nats_url = nats_url
        self.workdir = workdir
        self.results: dict[str, Any] = {}

    def env(self, section: str) -> dict[str, str]:
        return self.up.env(self.nats_url, section)

    def layout(self, env: dict[str, str]) -> Any:
        with environment(env):
            return build_layout(load_settings([NatsSettings]).get(NatsSettings))

    # 1. enqueue ---------------------------------------------------------------------------------
    async def enqueue(self) -> None:
        rows = []
        for size in self.sizes.enqueue:
            await self.up.seed(size)
            env = self.env(f"enqueue-{size}")
            layout = self.layout(env)
            await self._fresh_layout(layout)
            raw_seconds = await raw_publish(
                self.nats_url, layout.prefix, range(1, size + 1), "run-raw", Mode.REPUBLISH
            )
            await self._purge(layout.stream)
            started = time.perf_counter()
            child = run_child([str(BIN / "producer"), "enqueue", "--all-missing", "--json"], env)
            if child.returncode != 0:
                raise RuntimeError(f"producer enqueue failed ({child.returncode}): {child.stdout}")
            summary = json.loads(child.stdout.strip().splitlines()[-1])
            elapsed = summary.get("elapsed_seconds") or (time.perf_counter() - started)
            if summary["enqueued"] != size:
                raise RuntimeError(f"producer enqueued {summary['enqueued']} of {size}")
            rows.append(
                {
                    "rows": size,
                    "producer_rows_per_s": size / elapsed,
                    "raw_publish_async_per_s": size / raw_seconds,
                    "ratio": (size / elapsed) / (size / raw_seconds),
                    "producer_wall_seconds_with_startup": child.wall_seconds,
                    "producer_peak_rss_mib": child.peak_rss_mib,
                }
            )
            await self._delete_layout(layout)
        self.results["enqueue"] = {
            "how": (
                "`producer enqueue --all-missing --json` as a child process against the light PostgREST "
                "(1000-row keyset pages, catalog latency per page); rate = rows / the producer's own "
                "elapsed time for the run (read + publish + every ack). Raw = nats-py publish_async loop "
                "with the same subjects, bodies and headers into the same empty stream, all acks awaited. "
                "Peak RSS = the producer process's ru_maxrss from wait4."
            ),
            "sizes": rows,
            "rss_ratio_largest_to_smallest": rows[-1]["producer_peak_rss_mib"]
            / rows[0]["producer_peak_rss_mib"],
        }

    async def _fresh_layout(self, layout: Any) -> None:
        nc = await nats.connect(self.nats_url)
        try:
            await ensure_layout(nc.jetstream(), layout)
        finally:
            await nc.close()

    async def _consumer_paused(self, layout: Any, paused: bool) -> None:
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            if paused:
                await js.pause_consumer(layout.stream, layout.durable, "2099-01-01T00:00:00Z")
            else:
                await js.resume_consumer(layout.stream, layout.durable)
        finally:
            await nc.close()

    async def _purge(self, stream: str) -> None:
        nc = await nats.connect(self.nats_url)
        try:
            await nc.jetstream().purge_stream(stream)
        finally:
            await nc.close()

    async def _delete_layout(self, layout: Any) -> None:
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            for stream in (layout.stream, layout.dlq_stream):
                await js.delete_stream(stream)
        finally:
            await nc.close()

    # 2. worker throughput -----------------------------------------------------------------------
    async def throughput(self) -> None:
        count, repeats = self.sizes.worker_rows, self.sizes.repeats
        table: dict[str, Any] = {}
        for mode in (Mode.METADATA_ONLY, Mode.REPUBLISH):
            entry: dict[str, Any] = {}
            for _ in range(repeats):  # 1 and 2 workers alternate, so drift in the machine hits both
                for procs in (1, 2):
                    entry.setdefault(f"runs_workers_{procs}", []).append(
                        await self._drain(mode, procs, count)
                    )
            for procs in (1, 2):
                runs = entry[f"runs_workers_{procs}"]
                entry[f"workers_{procs}"] = {
                    key: statistics.median(run[key] for run in runs) for key in runs[0]
                }
            entry["one_worker_by_concurrency"] = {
                str(c): await self._drain(mode, 1, count, {"WORKER_CONCURRENCY": str(c)})
                for c in self.sizes.worker_concurrency
            }
            entry["one_worker_by_fetch_batch"] = {
                str(b): await self._drain(mode, 1, count, {"WORKER_FETCH_BATCH": str(b)})
                for b in self.sizes.worker_fetch_batch
            }
            await self.up.seed(self.sizes.naive_rows)
            entry["naive_rows_per_s"] = await naive_loop(self.up.url, self.sizes.naive_rows, mode)
            ceilings, ceiling_cpu = await self._ceilings(mode, count, repeats)
            entry["http_ceiling_rows_per_s"] = ceilings
            entry["http_ceiling_cpu_s_per_1000_rows"] = ceiling_cpu
            best = ceilings[best_ceiling(ceilings)]
            within = ceilings[best_ceiling(ceilings, DEFAULT_CONCURRENCY)]
            one = entry["workers_1"]["rows_per_s"]
            entry["default_concurrency"] = DEFAULT_CONCURRENCY
            entry["default_fetch_batch"] = DEFAULT_FETCH_BATCH
            same = ceilings.get(f"{DEFAULT_CONCURRENCY}-batched")
            entry["ratios"] = {
                "one_worker_vs_naive": one / entry["naive_rows_per_s"],
                "one_worker_vs_best_ceiling": one / within,
                "one_worker_vs_best_ceiling_any_concurrency": one / best,
                "one_worker_vs_ceiling_at_its_concurrency": None if same is None else one / same,
                "two_workers_vs_one": entry["workers_2"]["rows_per_s"] / one,
            }
            table[mode.value] = entry
        self.results["throughput"] = {
            "how": (
                f"a backlog of {count} requests (published while the consumer is paused) drained by "
                "workers started at default settings (pace off), the consumer resumed once all are ready; "
                "rate = rows between the first and last meta merge seen by the upstream / that time; "
                "CPU from /proc utime+stime of the worker processes from the first 1 % of rows merged to "
                "the last (cores_busy adds the upstreams and nats-server over that window, "
                "machine_cores_busy is every core's busy time from /proc/stat); 1 and 2 "
                f"workers are the median of {repeats} alternating runs. Naive = the plan's outline "
                "(sequential, a new httpx client per call). Ceiling = the same requests per row from one "
                "aiohttp session at each concurrency, one by one and batched as the worker batches "
                f"({self.sizes.fetch_batch} rows per read, lookup and merge), no NATS; median of {repeats} "
                "runs each. one_worker_vs_best_ceiling: against the best ceiling at concurrencies up to "
                "the worker's default; _any_concurrency: against the best of all of them."
            ),
            **table,
        }

    async def _ceilings(
        self, mode: Mode, count: int, repeats: int
    ) -> tuple[dict[str, float], dict[str, float]]:
        rates: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        for _ in range(repeats):
            for concurrency in self.sizes.ceiling_concurrency:
                for batched in (False, True):
                    await self.up.seed(count)
                    ids = range(1, count + 1)
                    if batched:
                        batch = self.sizes.fetch_batch
                        rate, cpu = await http_ceiling_batched(self.up.url, ids, mode, concurrency, batch)
                    else:
                        rate, cpu = await http_ceiling(self.up.url, ids, mode, concurrency)
                    key = f"{concurrency}-batched" if batched else str(concurrency)
                    rates.setdefault(key, []).append(rate)
                    cpus.setdefault(key, []).append(cpu)
        return (
            {k: statistics.median(v) for k, v in rates.items()},
            {k: statistics.median(v) for k, v in cpus.items()},
        )

    async def _drain(
        self, mode: Mode, procs: int, count: int, overrides: dict[str, str] | None = None
    ) -> dict[str, float]:
        await self.up.seed(count)
        env = {**self.env(f"worker-{mode.value}-{procs}"), **(overrides or {})}
        layout = self.layout(env)
        # The backlog an operator's `producer enqueue` leaves, published while the consumer is paused:
        # the harness takes no CPU from the workers while they drain it, and every worker is up and
        # bound before the first message is handed out.
        await self._fresh_layout(layout)
        await self._consumer_paused(layout, True)
        await self._publish_requests(layout, range(1, count + 1), mode)
        workers = await WorkerProcesses(env, procs, self.workdir).start()
        spy = None
        try:
            spy = self._profiler(workers, f"worker-{mode.value}-{procs}") if procs == 1 else None
            await self._consumer_paused(layout, False)
            # CPU is counted from the first rows merged to the last, the same window as the rate
            # (not the wait for the first pull after the resume)
            merged_before = await self.up.wait_until_merged(max(count // 100, 1), within=60, every=0.01)
            cpu_before, others_before, wall_before = workers.cpu(), self._others_cpu(), time.monotonic()
            machine_before = machine_busy_seconds()
            await self.up.wait_until_merged(count, within=600, every=0.05)
            cpu, others = workers.cpu() - cpu_before, self._others_cpu() - others_before
            machine = machine_busy_seconds() - machine_before
            wall = time.monotonic() - wall_before
            merges = await self.up.wait_for_merges(count, within=10)
        finally:
            workers.stop()
            if spy is not None:
                spy.wait(timeout=30)
        times = sorted(t for _, t in merges)
        seconds = times[-1] - times[0]
        await self._delete_layout(layout)
        return {
            "rows_per_s": (count - 1) / seconds,
            "cpu_s_per_1000_rows": cpu / (count - merged_before) * 1000,
            "cores_busy": (cpu + others) / wall,  # workers + upstreams + nats-server, of os.cpu_count()
            "machine_cores_busy": machine / wall,  # everything, the kernel's network work included
        }

    # 3. the pace where it is not the limit ------------------------------------------------------
    async def pace(self) -> None:
        """Pace off against the pace on, side by side (alternating runs): metadata-only under the default
        pace (it never takes a token), republishing under a pace far above what the workers reach."""
        count, repeats = self.sizes.worker_rows, self.sizes.repeats
        default = {"BACKFILL_PACE_PER_MINUTE": "30", "BACKFILL_PACE_BURST": "5"}
        far_above = {"BACKFILL_PACE_PER_MINUTE": "100000", "BACKFILL_PACE_BURST": "100000"}
        plans = [
            ("metadata-only", Mode.METADATA_ONLY, 1, default),
            ("metadata-only", Mode.METADATA_ONLY, 2, default),
            ("republish", Mode.REPUBLISH, 1, far_above),
            ("republish", Mode.REPUBLISH, 2, far_above),
        ]
        table: dict[str, Any] = {}
        for name, mode, procs, paced in plans:
            runs: dict[str, list[dict[str, float]]] = {"off": [], "paced": []}
            for repeat in range(repeats):  # which goes first alternates: no order bias
                order = [("off", {}), ("paced", paced)]
                for key, overrides in order if repeat % 2 == 0 else order[::-1]:
                    runs[key].append(await self._drain(mode, procs, count, overrides))
            medians = {
                key: {k: statistics.median(run[k] for run in values) for k in values[0]}
                for key, values in runs.items()
            }
            off, on = medians["off"], medians["paced"]
            table[f"{name}-workers-{procs}"] = {
                "pace": f"{paced['BACKFILL_PACE_PER_MINUTE']}/min, burst {paced['BACKFILL_PACE_BURST']}",
                "off": off,
                "paced": on,
                "throughput_ratio": on["rows_per_s"] / off["rows_per_s"],
                "cpu_ratio": on["cpu_s_per_1000_rows"] / off["cpu_s_per_1000_rows"],
            }
        for name in ("metadata-only", "republish"):
            table[f"{name}_two_workers_vs_one_paced"] = (
                table[f"{name}-workers-2"]["paced"]["rows_per_s"]
                / table[f"{name}-workers-1"]["paced"]["rows_per_s"]
            )
        self.results["pace"] = {
            "how": (
                f"the worker throughput run ({count} requests, published while the consumer is paused) "
                "with the pace off and on, alternating (which goes first alternates too), median of "
                f"{repeats} runs each; ratios = paced / off. Metadata-only under the default pace "
                "(30/min, burst 5), republishing under 100,000/min, burst 100,000 (never reached)."
            ),
            **table,
        }

    def _others_cpu(self) -> float:
        """CPU seconds so far of what shares the machine with the workers: upstreams and nats-server."""
        return cpu_seconds(self.up.pid) + (cpu_seconds(self.server_pid) if self.server_pid else 0.0)

    def _profiler(self, workers: WorkerProcesses, name: str) -> subprocess.Popen[bytes] | None:
        """With --profile: py-spy samples the worker until it exits (collapsed stacks, for flame graphs)."""
        if self.profile is None:
            return None
        self.profile.mkdir(parents=True, exist_ok=True)
        out = self.profile / f"{name}.txt"
        args = ["py-spy", "record", "--pid", str(workers.procs[0].pid), "--format", "raw", "-o", str(out)]
        return subprocess.Popen([*args, "--rate", "250"], stdout=subprocess.DEVNULL)

    async def _publish_requests(
        self, layout: Any, rows: range, mode: Mode, rate: float | None = None
    ) -> dict[int, float]:
        """Enqueue requests (as the producer would); with `rate`, paced; returns row id -> publish time."""
        nc = await nats.connect(self.nats_url)
        sent: dict[int, float] = {}
        try:
            publisher = AckPublisher(nc)
            futures = []
            started = time.monotonic()
            for index, row_id in enumerate(rows):
                if rate is not None:
                    delay = started + index / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                body = encode_request(new_request(row_id, "2025-10-14", mode, "run-bench"))
                headers = {Header.MSG_ID: msg_id(row_id, "run-bench"), Header.RUN_ID: "run-bench"}
                sent[row_id] = time.monotonic()
                futures.append(await publisher.submit(request_subject(layout.prefix, row_id), body, headers))
            results = await asyncio.gather(*futures)
            failed = [r for r in results if r.status.value != "stored"]
            if failed:
                raise RuntimeError(f"{len(failed)} bench requests were not stored: {failed[0]}")
            await publisher.close()
        finally:
            await nc.close()
        return sent

    # 4. latency ---------------------------------------------------------------------------------
    async def latency(self) -> None:
        count = self.sizes.latency_rows
        upstream_ms = sum(self.up.latency_ms.values()) + self.up.latency_ms["catalog"]  # read + merge
        await self.up.seed(count)
        env = self.env("latency")
        workers = await WorkerProcesses(env, 1, self.workdir).start()
        try:
            layout = self.layout(env)
            sent = await self._publish_requests(
                layout, range(1, count + 1), Mode.REPUBLISH, self.sizes.latency_rate
            )
            merges = await self.up.wait_for_merges(count, within=120)
        finally:
            workers.stop()
        await self._delete_layout(layout)
        overhead = [(t - sent[row_id]) * 1000 - upstream_ms for row_id, t in merges]
        self.results["latency"] = {
            "how": (
                f"{count} republish requests fed at {self.sizes.latency_rate}/s to one worker at default "
                "settings (not saturated); per row: time from the producer-side publish to the upstream "
                f"answering the meta merge, minus the {upstream_ms:.0f} ms of configured upstream latency "
                "on that path (row read, Jellyfin item, Agent Zero publish, merge)."
            ),
            "overhead_ms": {
                "p50": percentile(overhead, 50),
                "p95": percentile(overhead, 95),
                "p99": percentile(overhead, 99),
                "max": max(overhead),
            },
        }

    # 4. dead-letter replay ----------------------------------------------------------------------
    async def replay(self) -> None:
        count = self.sizes.replay
        rates: list[float] = []
        walls: list[float] = []
        for attempt in range(self.sizes.replay_runs):
            env = self.env(f"replay-{attempt}")
            layout = self.layout(env)
            await self._fresh_layout(layout)
            await self._seed_dead_letters(layout, count)
            child = run_child([str(BIN / "producer"), "dlq", "replay", "--all", "--json"], env)
            if child.returncode != 0:
                raise RuntimeError(f"dlq replay failed ({child.returncode}): {child.stdout}")
            summary = json.loads(child.stdout.strip().splitlines()[-1])
            if summary["replayed"] != count:
                raise RuntimeError(f"replayed {summary['replayed']} of {count}: {summary}")
            rates.append(count / summary["elapsed_seconds"])
            walls.append(child.wall_seconds)
            await self._delete_layout(layout)
        self.results["replay"] = {
            "how": (
                f"{count} dead letters (reason jellyfin_not_found) in the DLQ stream; `producer dlq replay "
                "--all --json` as a child process; rate = replayed / the command's own elapsed time "
                f"(read, re-enqueue with acks, remove each dead letter); median of {len(rates)} runs."
            ),
            "messages": count,
            "messages_per_s": statistics.median(rates),
            "runs_messages_per_s": rates,
            "wall_seconds_with_startup": statistics.median(walls),
        }

    # 5. the watcher's cost per pass -------------------------------------------------------------
    async def watch(self) -> None:
        sizes = self.sizes
        await self.up.seed(sizes.watch_rows)
        layout = self.layout(self.env("watch"))
        await self._fresh_layout(layout)
        await self._seed_dead_letters(layout, sizes.watch_dead_letters)
        self.results["watch"] = await watch_section(
            self.up,
            self.nats_url,
            layout,
            rows=sizes.watch_rows,
            dead_letters=sizes.watch_dead_letters,
            new_rows=sizes.watch_new_rows,
            idle_passes=sizes.watch_idle_passes,
        )
        await self._delete_layout(layout)

    async def _seed_dead_letters(self, layout: Any, count: int) -> None:
        nc = await nats.connect(self.nats_url)
        try:
            publisher = AckPublisher(nc)
            futures = []
            now = datetime.now(UTC)
            for row_id in range(1, count + 1):
                original = request_subject(layout.prefix, row_id)
                body = encode_request(new_request(row_id, "2025-10-14", Mode.REPUBLISH, "run-bench", now))
                stamp = now.isoformat(timespec="seconds")
                failure = Failure(
                    reason="jellyfin_not_found",
                    detail="no item by id and no search hit",
                    original_subject=original,
                    stream=layout.stream,
                    stream_seq=row_id,
                    deliveries=1,
                    first_failure=stamp,
                    last_failure=stamp,
                    worker="bench",
                    version="2025-10-14",
                    row_id=row_id,
                )
                original_headers = {Header.MSG_ID: msg_id(row_id, "run-bench"), Header.RUN_ID: "run-bench"}
                headers = dead_letter_headers(failure, original_headers)
                subject = dlq_subject(layout.prefix, "jellyfin_not_found")
                futures.append(await publisher.submit(subject, body, headers))
            await asyncio.gather(*futures)
            await publisher.close()
        finally:
            await nc.close()


def _enqueue_lines(enqueue: dict[str, Any]) -> list[str]:
    lines = ["enqueue        producer/s  raw publish_async/s  ratio  peak RSS MiB"]
    for row in enqueue["sizes"]:
        rate, raw = row["producer_rows_per_s"], row["raw_publish_async_per_s"]
        lines.append(
            f"  {row['rows']:>7} rows {rate:>10.0f} {raw:>20.0f} {row['ratio']:>6.2f} "
            f"{row['producer_peak_rss_mib']:>12.1f}"
        )
    lines.append(f"  peak RSS largest/smallest size: {enqueue['rss_ratio_largest_to_smallest']:.2f}")
    return lines


def _throughput_lines(throughput: dict[str, Any]) -> list[str]:
    lines = ["worker rows/s       1 worker  2 workers  naive  ceiling  CPU s/1000 rows"]
    for mode in ("metadata-only", "republish"):
        entry = throughput[mode]
        one, two = entry["workers_1"], entry["workers_2"]
        # the ceiling the target compares with: the best up to the worker's default concurrency
        ceiling_rates = entry["http_ceiling_rows_per_s"]
        best = ceiling_rates[best_ceiling(ceiling_rates, entry["default_concurrency"])]
        lines.append(
            f"  {mode:<17} {one['rows_per_s']:>8.0f} {two['rows_per_s']:>10.0f} "
            f"{entry['naive_rows_per_s']:>6.1f} {best:>8.0f} {one['cpu_s_per_1000_rows']:>16.2f}"
        )
        ratios = entry["ratios"]
        ceilings = ", ".join(f"c{c}: {v:.0f}" for c, v in entry["http_ceiling_rows_per_s"].items())
        sweep = ", ".join(
            f"c{c}: {v['rows_per_s']:.0f}" for c, v in entry["one_worker_by_concurrency"].items()
        )
        lines.append(
            f"    {ratios['one_worker_vs_naive']:.0f}x naive, {ratios['one_worker_vs_best_ceiling']:.0%} "
            f"of ceiling, 2 workers {ratios['two_workers_vs_one']:.2f}x one"
        )
        lines.append(f"    ceiling by concurrency {ceilings}")
        lines.append(f"    one worker by concurrency {sweep}")
        batches = ", ".join(
            f"b{b}: {v['rows_per_s']:.0f}" for b, v in entry["one_worker_by_fetch_batch"].items()
        )
        lines.append(f"    one worker by fetch batch (default concurrency) {batches}")
    return lines


def _pace_lines(pace: dict[str, Any]) -> list[str]:
    lines = [
        "pace vs off                pace                     off rows/s  paced rows/s  ratio"
        "  CPU s/1000 off  paced  CPU ratio"
    ]
    for key, entry in pace.items():
        if not isinstance(entry, dict) or "paced" not in entry:
            continue
        off, paced = entry["off"], entry["paced"]
        lines.append(
            f"  {key:<24} {entry['pace']:<24} {off['rows_per_s']:>10.0f} {paced['rows_per_s']:>13.0f} "
            f"{entry['throughput_ratio']:>6.2f} {off['cpu_s_per_1000_rows']:>15.3f} "
            f"{paced['cpu_s_per_1000_rows']:>6.3f} {entry['cpu_ratio']:>10.2f}"
        )
    for name in ("metadata-only", "republish"):
        ratio = pace.get(f"{name}_two_workers_vs_one_paced")
        if ratio is not None:  # results written before the metadata-only pair was measured lack it
            lines.append(f"  {name}, paced: 2 workers {ratio:.2f}x one")
    return lines


def render(results: dict[str, Any]) -> str:
    lines = [f"machine: {results['machine']}"]
    if "enqueue" in results:
        lines += ["", *_enqueue_lines(results["enqueue"])]
    if "throughput" in results:
        lines += ["", *_throughput_lines(results["throughput"])]
    if "pace" in results:
        lines += ["", *_pace_lines(results["pace"])]
    if "latency" in results:
        o = results["latency"]["overhead_ms"]
        lines += [
            "",
            f"overhead ms    p50 {o['p50']:.1f}  p95 {o['p95']:.1f}  p99 {o['p99']:.1f}  max {o['max']:.1f}",
        ]
    if "replay" in results:
        replay = results["replay"]
        lines += [
            "",
            f"dlq replay     {replay['messages_per_s']:.0f} messages/s ({replay['messages']} dead letters)",
        ]
    if "watch" in results:
        lines += ["", *watch_lines(results["watch"])]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else Sizes()
    server = NatsServerProcess()
    server.start()
    try:
        upstreams = UpstreamsProcess(args.catalog_ms, args.jellyfin_ms, args.agent_ms, server.url).start()
    except BaseException:
        server.close()
        raise
    sections = args.only or SECTIONS
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
            bench = Bench(sizes, upstreams, server.url, Path(workdir), args.profile, server.pid or 0)
            bench.results["machine"] = (
                f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                f"{platform.system()} {platform.release()}"
            )
            bench.results["started"] = datetime.now(UTC).isoformat(timespec="seconds")
            bench.results["upstream_latency_ms"] = upstreams.latency_ms
            bench.results["sizes"] = sizes.__dict__
            for section in sections:
                print(f"bench: {section} ...", flush=True)
                await getattr(bench, section)()
            return bench.results
    finally:
        await upstreams.close_session()
        upstreams.stop()  # before the server: its Agent Zero holds a NATS connection
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    parser.add_argument("--only", nargs="+", choices=SECTIONS)
    parser.add_argument("--profile", type=Path, help="py-spy the single-worker runs into this directory")
    parser.add_argument("--catalog-ms", type=float, default=5.0)
    parser.add_argument("--jellyfin-ms", type=float, default=20.0)
    parser.add_argument("--agent-ms", type=float, default=10.0)
    parser.add_argument(
        "--out", type=Path, default=None, help=f"JSON results (default {RESULTS}; none with --quick)"
    )
    args = parser.parse_args(argv)
    results = asyncio.run(main_async(args))
    print(render(results))
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nresults written to {out}")
    return 0
