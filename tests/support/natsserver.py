"""Where the tests' nats-server comes from: `NATS_URL` when set, a testcontainer when Docker answers,
else the `nats-server` binary (see `backfill_doubles.natsserver`)."""

from __future__ import annotations

import os
from pathlib import Path

from backfill_doubles.natsserver import NatsServerProcess, free_port, wait_for_port

__all__ = ["NatsContainerServer", "NatsServerProcess", "docker_available", "external_url", "free_port"]


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
