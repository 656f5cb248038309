"""Every way out of the demo and of a test fixture leaves no process, port or temporary directory."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.demo_process import (
    alive,
    assert_nothing_left,
    children,
    demo,
    processes_mentioning,
)
from tests.e2e.processes import eventually

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# PostgreSQL refuses to start with this setting (out of its range): a real failed start, no mock.
BREAK_POSTGRES = "from backfill_doubles import postgres; postgres._SERVER_SETTINGS['max_connections'] = '-1'"


def listening(url: str) -> bool:
    found = re.search(r"//(?:[^@/]*@)?([\d.]+):(\d+)", url)
    assert found is not None, url
    host, port = found.groups()
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) == 0


async def test_ctrl_c_mid_run_cleans_up_everything(demo_tmpdir: Path) -> None:
    """SIGINT while workers run: exit 130; workers, nats-server, PostgreSQL and temp dirs gone."""
    async with demo("--size", "150", "--pace", "60", tmpdir=demo_tmpdir) as run:  # paced: minutes of work
        header = await run.wait_for(r"up in (\S+): nats (\S+), catalog (\S+),")
        workdir, nats_url, pg_url = Path(header[1]), header[2], header[3]
        await run.wait_for("workers running")
        spawned = children(run.pid)
        assert spawned, "the demo should have child processes (nats-server, workers)"
        assert run.proc is not None
        run.proc.send_signal(signal.SIGINT)
        assert await run.exit() == 130
    assert not workdir.exists()
    await eventually(lambda: not any(alive(p) for p in spawned), timeout=10, what="children gone")
    assert not listening(nats_url)
    assert not listening(pg_url)
    await assert_nothing_left(demo_tmpdir)
    async with demo("--size", "26", "--json", tmpdir=demo_tmpdir) as rerun:
        assert await rerun.exit() == 0, "".join(rerun.output)
    await assert_nothing_left(demo_tmpdir)


async def test_sigterm_during_start_cleans_up_everything(demo_tmpdir: Path) -> None:
    """SIGTERM as soon as the stack is up (before any worker): exit 130 and nothing left."""
    async with demo("--size", "26", tmpdir=demo_tmpdir) as run:
        await run.wait_for(r"up in \S+:")
        assert run.proc is not None
        run.proc.send_signal(signal.SIGTERM)
        assert await run.exit() == 130
    await assert_nothing_left(demo_tmpdir)


async def test_a_failed_start_says_why_and_leaves_nothing(demo_tmpdir: Path) -> None:
    """PostgreSQL refusing to start (after nats-server, S3 and the doubles are up): a clear error, exit 1,
    and every part that had started is stopped, every temporary directory removed."""
    code = f"{BREAK_POSTGRES}\nfrom backfill_doubles.demo import main\nraise SystemExit(main())"
    async with demo("--size", "26", tmpdir=demo_tmpdir, python_code=code) as run:
        assert await run.exit() == 1
    output = "".join(run.output)
    assert "the embedded stack did not start" in output, output
    assert "max_connections" in output, output  # PostgreSQL's own reason is passed on
    assert "Traceback" not in output, output
    await assert_nothing_left(demo_tmpdir)


PROBE = f"""
import pytest

from backfill_doubles.stack import EmbeddedStack, StackOptions


@pytest.fixture
def broken_stack(nats_url):
    {BREAK_POSTGRES}
    with EmbeddedStack(StackOptions(size=10, catalog="postgres")) as stack:
        yield stack


def test_needs_the_stack(broken_stack):
    raise AssertionError("the fixture should have failed at setup")
"""


async def test_a_fixture_failing_at_setup_leaves_nothing(demo_tmpdir: Path, tmp_path: Path) -> None:
    """A pytest run whose fixture fails at setup (its stack's PostgreSQL refuses to start, after the
    session's nats-server and the stack's own nats-server are up) ends with nothing left behind."""
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    ran = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"),
            *("--rootdir", str(probe), "--basetemp", str(tmp_path / "base"), str(probe)),
        ],
        cwd=REPO,
        env={**env, "TMPDIR": str(demo_tmpdir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "1 error" in ran.stdout and "max_connections" in ran.stdout, ran.stdout
    assert not processes_mentioning(str(demo_tmpdir))
    await assert_nothing_left(demo_tmpdir)


WORKER_PROBE = """
from tests.e2e.processes import WorkerProcess


async def test_starts_a_worker_and_fails(tmp_path):
    env = {"NATS_URL": "nats://127.0.0.1:{port}", "SUPA_REST_URL": "http://127.0.0.1:{port}",
           "SUPABASE_SERVICE_ROLE_KEY": "k", "JELLYFIN_URL": "http://127.0.0.1:{port}",
           "JELLYFIN_API_KEY": "k", "JELLYFIN_USER_ID": "0" * 31 + "1"}
    await WorkerProcess(env, "--grace", "{marker}").start()  # waits 30 s for a NATS that is not there
    raise AssertionError("failing before waiting for the worker")
"""


async def test_a_failing_test_leaves_no_worker_running(tmp_path: Path) -> None:
    """The e2e suite kills the workers a test started and never waited for."""
    from backfill_doubles.natsserver import free_port

    marker = "7.31337"  # a grace no other worker uses: how its process is found
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "test_probe.py").write_text(
        WORKER_PROBE.replace("{port}", str(free_port())).replace("{marker}", marker)
    )
    ran = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "tests.e2e.conftest"),
            *("-p", "no:cacheprovider", "-o", "asyncio_mode=auto"),
            *("--rootdir", str(probe), "--basetemp", str(tmp_path / "base"), str(probe)),
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "NATS_URL"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 1 and "1 failed" in ran.stdout, ran.stdout + ran.stderr
    await eventually(lambda: not processes_mentioning(f"--grace {marker}"), timeout=10, what="worker gone")
