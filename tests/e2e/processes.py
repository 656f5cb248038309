"""Worker and watcher processes under a test's control: start, wait, SIGTERM, SIGKILL; poll helpers with
deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import nats
from nats.js.errors import NotFoundError

from backfill_doubles.natsserver import free_port
from tests.e2e.conftest import cli

FAST_RETRIES = {
    "BACKFILL_RETRY_BASE_DELAY": "0.2",
    "BACKFILL_RETRY_MAX_DELAY": "1",
    "BACKFILL_HTTP_TIMEOUT": "2",
    "WORKER_SWEEP_INTERVAL": "1",
    "WORKER_STATS_INTERVAL": "1",
}


STARTED: set[asyncio.subprocess.Process] = set()  # every worker a test started; see `stop_leftovers`


async def stop_leftovers() -> None:
    """Kill and reap the workers a test left running (it failed, or timed out, before waiting for them):
    a process left unreaped would warn, pipes unclosed, in whichever later test collects it."""
    for proc in STARTED:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.communicate(), 10)
    STARTED.clear()


class WorkerProcess:
    PROGRAM: tuple[str, ...] = ("worker",)

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self._env = {**os.environ, **FAST_RETRIES, **env}
        self.metrics_port = free_port()
        self._args = ["--metrics-port", str(self.metrics_port), *args]
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr = b""

    async def start(self) -> WorkerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            cli(self.PROGRAM[0]),
            *self.PROGRAM[1:],
            *self._args,
            env=self._env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        STARTED.add(self.proc)
        return self

    async def wait(self, timeout: float = 120) -> int:
        assert self.proc is not None
        _, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        self.stderr = err
        return self.proc.returncode or 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)


class WatcherProcess(WorkerProcess):
    """`producer watch` with its own metrics port."""

    PROGRAM = ("producer", "watch")

    def metrics(self) -> str:
        """The watcher's /metrics text; empty while it does not serve yet."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        except httpx.TransportError:
            return ""


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 60, what: str = ""
) -> None:
    """Poll `check` until true or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


async def consumer_state(url: str, stream: str, durable: str) -> tuple[int, int]:
    """(pending, ack pending) of the durable."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        return info.num_pending or 0, info.num_ack_pending or 0
    finally:
        await nc.drain()


async def read_stream(url: str, stream: str) -> list[Any]:
    """Every message left in `stream`, in order, skipping the gaps deletes leave."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    msgs: list[Any] = []
    seq = (await js.stream_info(stream)).state.first_seq
    while True:
        try:
            msg = await js.get_msg(stream, seq, subject=">", next=True)
        except NotFoundError:
            break
        msgs.append(msg)
        seq = int(msg.seq) + 1
    await nc.drain()
    return msgs
