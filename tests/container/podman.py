"""The image as containers: podman without a daemon, on the host network, hardened as compose runs it.

`deploy/image-ci.sh` builds the image and exports where it lives (BACKFILL_IMAGE, CONTAINERS_STORAGE_CONF,
CONTAINERS_CONF); these helpers start containers from it, read their state and remove them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LABEL = "backfill-container-test"
TOOLS = ("podman", "buildah", "runc")
# compose.override.yml's worker: the image's own user, nothing writable but what compose mounts (nothing),
# no capability, no privilege gained by exec. The host network: the stack's servers are on loopback.
HARDENED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
BASE = ("--pull", "never", "--network", "host", "--label", LABEL)
COMPOSE_STOP_GRACE = 35  # compose.override.yml's stop_grace_period for the workers


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str
    seconds: float


async def podman(*args: str, timeout: float = 120, check: bool = True) -> Done:
    """Run one podman command to its end."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "podman", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    done = Done(proc.returncode or 0, out.decode(), err.decode(), time.monotonic() - started)
    if check and done.code != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {done.code}: {done.stderr[-2000:]}")
    return done


def env_file(directory: Path, env: dict[str, str]) -> Path:
    """The variables as compose's env_file passes them (a file, 0600: nothing on a command line)."""
    path = directory / f"env-{uuid.uuid4().hex[:8]}"
    path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    path.chmod(0o600)
    return path


@dataclass
class Container:
    name: str

    async def inspect(self) -> dict[str, Any]:
        (state,) = json.loads((await podman("inspect", self.name)).stdout)
        return dict(state)

    async def exit_code(self, timeout: float = 120) -> int:
        """Wait for the container to end; its exit code."""
        done = await podman("wait", self.name, timeout=timeout)
        return int(done.stdout.strip())

    async def stop(self, grace: int = COMPOSE_STOP_GRACE) -> Done:
        """`podman stop -t grace`, as compose stops a service: SIGTERM, then SIGKILL after the grace."""
        return await podman("stop", "--time", str(grace), self.name, timeout=grace + 30)

    async def logs(self) -> str:
        done = await podman("logs", self.name)
        return done.stdout + done.stderr

    async def healthcheck(self) -> Done:
        """The image's own HEALTHCHECK, once: exit 0 healthy, 1 unhealthy."""
        return await podman("healthcheck", "run", self.name, check=False, timeout=30)

    async def host_pid(self) -> int:
        return int((await self.inspect())["State"]["Pid"])


@dataclass
class Images:
    """Containers from one image, each with the environment a test gives it."""

    image: str
    workdir: Path
    started: list[Container] = field(default_factory=list)

    async def run(self, env: dict[str, str], *command: str, options: tuple[str, ...] = HARDENED) -> Done:
        """A one-shot container (`--rm`, no HEALTHCHECK, as compose runs the producer) to its end."""
        env_path = str(env_file(self.workdir, env))
        arguments = ("run", "--rm", "--no-healthcheck", *BASE, *options, "--env-file", env_path)
        return await podman(*arguments, self.image, *command, check=False)

    async def start(
        self, env: dict[str, str], *command: str, options: tuple[str, ...] = HARDENED
    ) -> Container:
        """A detached container (the worker's default command unless `command` says otherwise). No systemd
        here to run the HEALTHCHECK's timer: `podman healthcheck run` runs it on demand instead."""
        name = f"backfill-test-{uuid.uuid4().hex[:10]}"
        await podman(
            "run", "--detach", "--name", name, "--health-interval", "disable", *BASE, *options,
            "--env-file", str(env_file(self.workdir, env)), self.image, *command,
        )  # fmt: skip
        container = Container(name)
        self.started.append(container)
        return container

    async def remove_all(self) -> None:
        for container in self.started:
            await podman("rm", "--force", "--time", "0", container.name, check=False)
        self.started.clear()


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def storage_configured() -> bool:
    """buildah and podman share one storage only through these (deploy/image-ci.sh sets them)."""
    return all(os.environ.get(name) for name in ("CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF"))
