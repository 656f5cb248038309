"""The Agent Zero double as a process of its own (`python -m backfill_doubles.agent_zero`): started,
SIGKILLed (or killing itself at a crash window), restarted on the same port, as the service would be."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from backfill_doubles.contracts import CONTRACTS_DIR
from backfill_doubles.natsserver import free_port


class AgentZeroProcess:
    def __init__(self, nats_url: str, *options: str) -> None:
        """`options`: the double's command line (e.g. `--reconnect-attempts 2`), for every start."""
        self.nats_url = nats_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._options = options
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, *once: str) -> AgentZeroProcess:
        """Start it (on the same port every time); `once`: options for this start only (a crash window:
        `--die-after-publish 3`). Returns once it serves."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "backfill_doubles.agent_zero",
            "--nats-url",
            self.nats_url,
            "--port",
            str(self.port),
            "--contracts",
            str(CONTRACTS_DIR),
            *self._options,
            *once,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        if not line.startswith(b"READY "):
            await self.stop()
            raise RuntimeError(f"the Agent Zero double did not start: {line!r}")
        self.starts += 1
        return self

    async def exited(self, within: float = 60) -> int:
        """Wait until the process ends (it killed itself, or was killed); its return code."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), within)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def stop(self) -> None:
        """SIGKILL (it ignores SIGTERM, as the real service does) and reap."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self.proc is not None:
            await self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.feed_eof()

    async def restart(self, *once: str) -> None:
        await self.stop()
        await self.start(*once)
