"""End-to-end fixtures: the embedded stack, and helpers that run the installed CLIs as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from jsonschema import Draft202012Validator

from backfill_doubles.demo import cli as demo_cli
from backfill_doubles.stack import EmbeddedStack, StackOptions


def cli(name: str) -> str:
    """The installed console script (beside this interpreter when PATH lacks the venv)."""
    found = demo_cli(name)
    assert Path(found).exists(), f"console script {name!r} is not installed (pip install -e .)"
    return found


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]


async def run_cli(name: str, args: list[str], env: dict[str, str], timeout: float = 120) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        cli(name),
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:  # reap it here, or it warns unreaped in whichever later test collects it
        proc.kill()
        await proc.communicate()
        raise
    return Ran(proc.returncode or 0, out.decode(), err.decode())


@dataclass
class Envelopes:
    """Every envelope Agent Zero publishes on core NATS while the listener runs."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    def by_row(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for envelope in self.seen:
            grouped.setdefault(envelope["correlation_id"], []).append(envelope)
        return grouped


@pytest.fixture
async def envelopes(stack: EmbeddedStack) -> AsyncIterator[Envelopes]:
    nc = await nats.connect(stack.nats_url)
    collected = Envelopes()

    async def on_msg(msg: Any) -> None:
        collected.seen.append(json.loads(msg.data))

    await nc.subscribe("content.published.v1", cb=on_msg)
    await nc.flush()
    yield collected
    await nc.drain()


@pytest.fixture
def stack(nats_url: str, contracts_dir: Path) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(StackOptions(size=260, nats_url=nats_url, contracts_dir=contracts_dir)) as embedded:
        yield embedded


@pytest.fixture(scope="session")
def schemas(contracts_dir: Path) -> dict[str, Draft202012Validator]:
    def load(name: str) -> Draft202012Validator:
        return Draft202012Validator(json.loads((contracts_dir / name).read_text()))

    return {"envelope": load("envelope.schema.json"), "payload": load("content.published.v1.schema.json")}


@pytest.fixture
def demo_tmpdir() -> Iterator[Path]:
    """An empty TMPDIR for one demo run, traversable by PostgreSQL's system user when we are root."""
    path = Path(tempfile.mkdtemp(prefix="demo-tmp-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
async def no_worker_outlives_its_test() -> AsyncIterator[None]:
    """A test that fails or times out before waiting for its workers does not leave them running."""
    from tests.e2e.processes import stop_leftovers

    yield
    await stop_leftovers()
