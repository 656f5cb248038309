"""Ctrl-C during the demo leaves no stray process, port or temporary directory, and a rerun works."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.e2e.processes import eventually

pytestmark = pytest.mark.slow


def listening(url: str) -> bool:
    host, port = re.search(r"//(?:[^@/]*@)?([\d.]+):(\d+)", url).groups()  # type: ignore[union-attr]
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


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


async def test_ctrl_c_mid_run_cleans_up_everything() -> None:
    """SIGINT while workers run: exit 130 promptly; workers, nats-server, PostgreSQL and temp dir gone."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backfill_doubles.demo",
        "--size",
        "400",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ},
    )
    assert proc.stdout is not None
    header = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    workdir = Path(re.search(r"up in (\S+):", header).group(1))  # type: ignore[union-attr]
    nats_url = re.search(r"nats (\S+),", header).group(1)  # type: ignore[union-attr]
    pg_url = re.search(r"catalog (\S+),", header).group(1)  # type: ignore[union-attr]
    while b"workers running" not in await asyncio.wait_for(proc.stdout.readline(), 60):
        pass
    spawned = children(proc.pid)
    assert spawned, "the demo should have child processes (nats-server, workers)"
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130
    assert not workdir.exists()
    await eventually(lambda: not any(alive(p) for p in spawned), timeout=10, what="children gone")
    assert not listening(nats_url)
    assert not listening(pg_url)
    rerun = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "backfill_doubles.demo",
        "--size",
        "26",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ},
    )
    await asyncio.wait_for(rerun.communicate(), 120)
    assert rerun.returncode == 0
