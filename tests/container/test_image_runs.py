"""The image as operators run it: the producer's container enqueues, hardened worker containers drain,
serve /metrics and /healthz, pass the image's own HEALTHCHECK, and stop well on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import aiohttp
import pytest

from backfill.core.payload import correlation_id
from backfill_doubles.natsserver import free_port
from backfill_doubles.stack import EmbeddedStack
from tests.container.podman import COMPOSE_STOP_GRACE, Images, podman
from tests.e2e.conftest import Envelopes
from tests.e2e.processes import consumer_state, eventually
from tests.e2e.test_pipeline import VERSION, assert_enriched, read_stream

IMAGE_USER = "10001"
# What the image weighs on the Debian-built base (242 MB of it the base: Python 3.11, pip, venv, CA
# certificates): the runtime venv adds about 60 MB. Growing past this is a change someone must explain.
SIZE_BUDGET = 330 * 1000 * 1000


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as answer:
        return answer.status, await answer.text()


async def serving(port: int) -> bool:
    try:
        status, _ = await get(port, "/healthz")
    except aiohttp.ClientError:
        return False
    return status == 200


def candidates(stack: EmbeddedStack) -> list[int]:
    return [row_id for row_id, row in stack.rows.items() if row.expect != "untouched"]


async def assert_backfilled(
    stack: EmbeddedStack, envelopes: Envelopes, layout_env: dict[str, str], schemas: dict[str, Any]
) -> None:
    """One valid envelope per republished row and the row enriched; the rest dead-lettered as expected;
    nothing left in the work stream."""
    republished = [row_id for row_id, row in stack.rows.items() if row.expect == "republished"]
    by_row = envelopes.by_row()
    ids = {envelope["id"] for envelope in envelopes.seen}
    assert len(envelopes.seen) == len(republished), "one envelope per republished row, no more"
    for row_id in republished:
        (envelope,) = by_row[correlation_id(row_id, VERSION)]
        assert schemas["envelope"].is_valid(envelope)
        assert schemas["payload"].is_valid(envelope["payload"])
        assert_enriched(stack, row_id, ids)
    dead = await read_stream(stack.nats_url, layout_env["BACKFILL_DLQ_STREAM"])
    reasons = {int(m.headers["Backfill-Row-Id"]): m.headers["Backfill-Reason"] for m in dead}
    expected = {
        rid: r.expect.removeprefix("dlq:") for rid, r in stack.rows.items() if r.expect.startswith("dlq:")
    }
    assert reasons == expected
    assert await read_stream(stack.nats_url, layout_env["BACKFILL_STREAM"]) == []


async def enqueue(images: Images, env: dict[str, str], stack: EmbeddedStack) -> None:
    ran = await images.run(env, "producer", "enqueue", "--all-missing", "--json")
    assert ran.code == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["enqueued"] == len(candidates(stack)) and summary["failed"] == 0, summary


async def runtime_problems(images: Images) -> list[str]:
    """What is wrong with the image's runtime: a program that does not answer, a module missing or one
    that should not be there, a broken requirement. Empty: nothing."""
    problems = []
    for program in ("worker", "producer"):
        ran = await images.run({}, program, "--version")
        if ran.code != 0 or not ran.stdout.startswith(f"{program} 0."):
            problems.append(f"{program} --version: exit {ran.code}: {ran.stderr.strip()[-300:]}")
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('backfill', 'producer', 'worker') if u.find_spec(m) is None], "
        "[m for m in ('backfill_doubles', 'tests', 'bench', 'httpx', 'pytest') if u.find_spec(m)])"
    )
    ran = await images.run({}, "python", "-c", probe)
    if ran.stdout.strip() != "[] []":
        problems.append(f"modules (missing, not wanted): {ran.stdout.strip()} {ran.stderr.strip()[-300:]}")
    ran = await images.run(
        {}, "/usr/bin/python3", "-m", "pip", "--python", "/opt/backfill/bin/python", "check"
    )
    if ran.code != 0 or "No broken requirements" not in ran.stdout:
        problems.append(f"pip check: {ran.stdout.strip()} {ran.stderr.strip()[-300:]}")
    return problems


async def test_the_image_holds_the_runtime_and_nothing_else(image: str, images: Images) -> None:
    """Both programs answer; no doubles, tests or bench; `pip check` clean; the size within its budget."""
    assert await runtime_problems(images) == []
    size = int((await podman("image", "inspect", "--format", "{{.Size}}", image)).stdout)
    assert size <= SIZE_BUDGET, (
        f"the image is {size / 1e6:.0f} MB, over its {SIZE_BUDGET / 1e6:.0f} MB budget"
    )


async def test_the_producer_container_enqueues_and_two_hardened_worker_containers_drain_it(
    stack: EmbeddedStack,
    images: Images,
    envelopes: Envelopes,
    layout_env: dict[str, str],
    schemas: dict[str, Any],
) -> None:
    """Read-only root, no capability, no new privileges, the image's user: every row right, each worker
    serving /metrics and /healthz and healthy by the image's HEALTHCHECK while it works."""
    env = stack.env(**layout_env, BACKFILL_LOG_FORMAT="json")
    ports = [free_port(), free_port()]
    workers = [
        await images.start({**env, "WORKER_METRICS_PORT": str(port)}, "worker", "--concurrency", "8")
        for port in ports
    ]
    for port in ports:
        await eventually(lambda port=port: serving(port), timeout=60, what=f"/healthz on {port}")
    await enqueue(images, env, stack)
    for worker, port in zip(workers, ports, strict=True):
        status, text = await get(port, "/metrics")
        assert status == 200 and "backfill_messages_total" in text
        assert (await get(port, "/readyz"))[0] == 200
        health = await worker.healthcheck()
        assert health.code == 0, health.stdout + health.stderr
        assert (await worker.inspect())["State"]["Health"]["Status"] == "healthy"
        uid = await podman("exec", worker.name, "id", "-u")
        assert uid.stdout.strip() == IMAGE_USER
    durable = (layout_env["BACKFILL_STREAM"], layout_env["BACKFILL_CONSUMER"])
    await eventually(lambda: drained(stack, durable), timeout=120, what="the queue drained")
    for worker in workers:
        stopped = await worker.stop()
        assert stopped.code == 0
        assert (await worker.inspect())["State"]["ExitCode"] == 0, await worker.logs()
    await assert_backfilled(stack, envelopes, layout_env, schemas)


async def drained(stack: EmbeddedStack, durable: tuple[str, str]) -> bool:
    pending, in_flight = await consumer_state(stack.nats_url, *durable)
    return pending == 0 and in_flight == 0


async def test_sigterm_mid_run_drains_within_composes_grace_and_the_next_container_finishes(
    stack: EmbeddedStack,
    images: Images,
    envelopes: Envelopes,
    layout_env: dict[str, str],
    schemas: dict[str, Any],
) -> None:
    """`podman stop` with compose's 35 s grace while a paced run is half done: exit 0 well within the
    grace, nothing lost, and a new container finishes the rest with one envelope per row."""
    env = stack.env(**layout_env, BACKFILL_PACE_PER_MINUTE="600", BACKFILL_PACE_BURST="2")  # 10 a second
    first = await images.start(
        {**env, "WORKER_METRICS_PORT": str(free_port())}, "worker", "--concurrency", "16"
    )
    await enqueue(images, env, stack)
    await eventually(lambda: len(envelopes.seen) >= 10, timeout=60, what="the run under way")
    stopped = await first.stop(COMPOSE_STOP_GRACE)
    state = (await first.inspect())["State"]
    assert state["ExitCode"] == 0, await first.logs()
    assert stopped.seconds < COMPOSE_STOP_GRACE - 5, f"took {stopped.seconds:.1f}s: SIGKILL came near"
    republished = sum(1 for row in stack.rows.values() if row.expect == "republished")
    assert len(envelopes.seen) < republished, "the stop came too late to prove anything"
    logs = await first.logs()
    assert "Traceback" not in logs
    second = await images.start(
        {**env, "BACKFILL_PACE_PER_MINUTE": "0", "WORKER_METRICS_PORT": str(free_port())},
        "worker",
        "--exit-when-idle",
        "3",
    )
    assert await second.exit_code(timeout=120) == 0, await second.logs()
    await assert_backfilled(stack, envelopes, layout_env, schemas)


async def test_the_healthcheck_fails_when_the_worker_cannot_serve(
    stack: EmbeddedStack, images: Images, layout_env: dict[str, str]
) -> None:
    """A wedged worker (its process stopped, the port still open) is unhealthy by the image's own check,
    and healthy again once it runs."""
    port = free_port()
    worker = await images.start({**stack.env(**layout_env), "WORKER_METRICS_PORT": str(port)}, "worker")
    await eventually(lambda: serving(port), timeout=60, what="/healthz")
    assert (await worker.healthcheck()).code == 0
    pid = await worker.host_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        wedged = await worker.healthcheck()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wedged.code != 0 and "unhealthy" in wedged.stdout, wedged.stdout + wedged.stderr
    await eventually(lambda: serving(port), timeout=30, what="/healthz again")
    assert (await worker.healthcheck()).code == 0
    assert (await worker.stop()).code == 0


@pytest.mark.parametrize(
    ("program", "change", "code", "named"),
    [
        ("worker", {"NATS_URL": "nats://127.0.0.1:1"}, 3, "cannot connect to NATS at nats://127.0.0.1:1"),
        ("producer", {"NATS_URL": "nats://127.0.0.1:1"}, 3, "cannot connect to NATS at nats://127.0.0.1:1"),
        ("worker", {"JELLYFIN_URL": ""}, 2, "JELLYFIN_URL: is required but not set"),
        ("worker", {"SUPA_REST_URL": "postgrest:3000"}, 2, "SUPA_REST_URL"),
        ("producer", {"NATS_URL": "http://nats:4222"}, 2, "NATS_URL"),
    ],
)
async def test_a_bad_configuration_is_one_short_error_and_the_documented_exit_code(
    stack: EmbeddedStack, images: Images, program: str, change: dict[str, str], code: int, named: str
) -> None:
    """NATS out of reach (exit 3), a required variable missing or a malformed URL (exit 2): the error
    names the problem, no traceback, within seconds."""
    env = {**stack.env(BACKFILL_NATS_CONNECT_TIMEOUT="2"), **change}
    command = ["worker"] if program == "worker" else ["producer", "status"]
    ran = await asyncio.wait_for(images.run(env, *command), 60)
    assert ran.code == code, ran.stdout + ran.stderr
    assert named in ran.stderr
    assert "Traceback" not in ran.stderr
    assert len(ran.stderr.splitlines()) <= 4, ran.stderr
    assert ran.seconds < 15, f"{ran.seconds:.1f}s"
