"""Processes and plumbing the benchmark shares: the upstreams process, worker processes, environments."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from backfill_doubles.natsserver import free_port
from bench.upstreams import API_KEY, SERVICE_KEY, USER_ID

BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class UpstreamsProcess:
    """`bench.upstreams` in its own process, so its CPU never shares a GIL with what is measured."""

    def __init__(self, catalog_ms: float, jellyfin_ms: float, agent_ms: float, nats_url: str) -> None:
        self.latency_ms = {"catalog": catalog_ms, "jellyfin": jellyfin_ms, "agent_zero": agent_ms}
        self.nats_url = nats_url  # where its Agent Zero publishes the envelopes
        self._proc: subprocess.Popen[str] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def start(self) -> UpstreamsProcess:
        args = [
            sys.executable,
            "-m",
            "bench.upstreams",
            "--catalog-ms",
            str(self.latency_ms["catalog"]),
            "--jellyfin-ms",
            str(self.latency_ms["jellyfin"]),
            "--agent-ms",
            str(self.latency_ms["agent_zero"]),
            "--nats-url",
            self.nats_url,
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"bench.upstreams did not start: {line!r}")
        self.url = line.removeprefix("READY ")
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("bench.upstreams is not running")
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One control request, on one kept-alive session: it is polled while workers are measured."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        async with self._session.request(method, f"{self.url}{path}", json=body) as response:
            response.raise_for_status()
            return msgspec.json.decode(await response.read())

    async def close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def seed(self, rows: int) -> None:
        await self.call("POST", "/_bench/seed", {"rows": rows})

    async def append(self, rows: int) -> None:
        await self.call("POST", "/_bench/append", {"rows": rows})

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self.call("GET", "/_bench/stats")
        return stats

    async def wait_until_merged(self, count: int, within: float, every: float = 0.1) -> int:
        """Poll the count (cheap for both sides: the machine is shared with what is measured) until at
        least `count` rows were merged; returns how many were."""
        deadline = time.monotonic() + within
        while True:
            merged = int((await self.stats())["merged"])
            if merged >= count:
                return merged
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {merged} of {count} rows merged in {within} s")
            await asyncio.sleep(every)

    async def wait_for_merges(self, count: int, within: float) -> list[tuple[int, float]]:
        """Wait until `count` rows were merged, then read [(row id, monotonic time)] once."""
        await self.wait_until_merged(count, within)
        return [(int(r), float(t)) for r, t in await self.call("GET", "/_bench/merges")]

    async def publish_times(self) -> list[float]:
        """When each Agent Zero post arrived (monotonic), in arrival order."""
        return [float(t) for t in await self.call("GET", "/_bench/publishes")]

    def env(self, nats_url: str, section: str, **overrides: str) -> dict[str, str]:
        """Everything producer and worker read; a section gets its own stream, consumer and subjects."""
        tag = section.upper().replace("-", "_")
        values = {
            "NATS_URL": nats_url,
            "SUPA_REST_URL": f"{self.url}/rest",
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "AGENT_ZERO_BASE_URL": f"{self.url}/agent",
            "JELLYFIN_URL": f"{self.url}/jellyfin",
            "JELLYFIN_PUBLIC_BASE_URL": "https://jellyfin.example.org",
            "JELLYFIN_API_KEY": API_KEY,
            "JELLYFIN_USER_ID": USER_ID,
            "BACKFILL_STREAM": f"BENCH_{tag}",
            "BACKFILL_DLQ_STREAM": f"BENCH_{tag}_DLQ",
            "BACKFILL_CONSUMER": f"bench-{section}",
            "BACKFILL_SUBJECT_PREFIX": f"bench.{section}",
            "BACKFILL_PACE_BUCKET": f"BENCH_{tag}_PACE",
            "BACKFILL_LEDGER_BUCKET": f"BENCH_{tag}_LEDGER",
            "BACKFILL_PACE_PER_MINUTE": "0",  # the pace is Discord's limit, not a cost of the system
            "BACKFILL_LOG_FORMAT": "json",
            "BACKFILL_MAX_ACK_PENDING": "10000",
        }
        return {**values, **overrides}


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set variables for in-process runs of producer code (it reads its settings from the env)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (every core, every process, the kernel's
    interrupt work too), from the first line of /proc/stat: all time but idle and iowait."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return (total - fields[3] - fields[4]) / CLOCK_TICKS


class WorkerProcesses:
    """N `worker` processes at their default settings, each with its own metrics port."""

    def __init__(self, env: dict[str, str], count: int, log_dir: Path, extra: Sequence[str] = ()) -> None:
        self._env = {**os.environ, **env}
        self._count = count
        self._log_dir = log_dir
        self._extra = list(extra)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    async def start(self, within: float = 30.0) -> WorkerProcesses:
        for _ in range(self._count):
            port = free_port()
            log = (self._log_dir / f"worker-{port}.log").open("ab")
            args = [str(BIN / "worker"), "--metrics-port", str(port), *self._extra]
            # Popen only spawns; nothing here waits on the child
            self.procs.append(subprocess.Popen(args, env=self._env, stdout=log, stderr=log))  # noqa: ASYNC220
            self.ports.append(port)
        async with aiohttp.ClientSession() as session:
            for port, proc in zip(self.ports, self.procs, strict=True):
                await _wait_ready(session, port, proc, within)
        return self

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


async def _wait_ready(
    session: aiohttp.ClientSession, port: int, proc: subprocess.Popen[bytes], within: float
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker on port {port} exited with {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"worker on port {port} not ready within {within} s")


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    wall_seconds: float
    peak_rss_mib: float
    stdout: str


def run_child(args: Sequence[str], env: dict[str, str]) -> ChildRun:
    """Run a command to completion; its own peak RSS comes from wait4's rusage (not the children's)."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(args), env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return ChildRun(proc.returncode, wall, usage.ru_maxrss / 1024, stdout)


def own_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)) - 1, 0)
    return ordered[min(rank, len(ordered) - 1)]
