"""The demo as a child process under a test's control, and the traces a run may leave behind.

Every read waits for a line (with a deadline), never for a time; leaving the context always stops the
demo the way a user would (SIGTERM, then SIGKILL after a grace), so a failing test leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path
from types import TracebackType


class DemoProcess:
    def __init__(self, args: list[str], tmpdir: Path, python_code: str | None = None) -> None:
        self._command = ["-c", python_code] if python_code else ["-m", "backfill_doubles.demo"]
        self._args = args
        self._env = {**os.environ, "TMPDIR": str(tmpdir)}
        self._env.pop("NATS_URL", None)
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def __aenter__(self) -> DemoProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *self._command,
            *self._args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env,
        )
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.exit(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """The first line from now on that matches `pattern`; fails with the output so far otherwise."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while line := (await self.proc.stdout.readline()).decode(errors="replace"):
                    self.output.append(line)
                    if found := re.search(pattern, line):
                        return found
        except TimeoutError:
            pass
        raise AssertionError(f"no line matching {pattern!r}; the demo printed:\n{''.join(self.output)}")

    async def exit(self) -> int:
        """Read the rest of the output and wait for the demo to end; its exit code."""
        assert self.proc is not None and self.proc.stdout is not None
        self.output.append((await self.proc.stdout.read()).decode(errors="replace"))
        return await self.proc.wait()


def demo(*args: str, tmpdir: Path, python_code: str | None = None) -> DemoProcess:
    return DemoProcess(list(args), tmpdir, python_code)


def processes_mentioning(text: str) -> dict[int, str]:
    """Live processes whose command line contains `text` (nats-server's store, PostgreSQL's data dir)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in command and alive(int(entry.name)):
                found[int(entry.name)] = command
    return found


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def assert_nothing_left(tmpdir: Path) -> None:
    """No process refers to `tmpdir` and nothing is left in it (processes polled for a moment: a killed
    one leaves /proc shortly after its parent saw it exit)."""
    from tests.e2e.processes import eventually

    await eventually(lambda: not processes_mentioning(str(tmpdir)), timeout=10, what="no process left")
    assert sorted(p.name for p in tmpdir.iterdir()) == []
