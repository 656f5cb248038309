"""The installed CLIs: configuration errors, dry runs and previews that write nothing."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from backfill_doubles.stack import EmbeddedStack
from tests.e2e.conftest import cli, run_cli

pytestmark = pytest.mark.slow
CLEAN_ENV = {
    "SUPA_REST_URL": "",
    "SUPABASE_REST_URL": "",
    "SUPABASE_SERVICE_ROLE_KEY": "",
    "JELLYFIN_URL": "",
    "JELLYFIN_API_KEY": "",
    "JELLYFIN_USER_ID": "",
    "MINIO_ENDPOINT": "",
}


@pytest.mark.parametrize(("name", "args"), [("worker", []), ("producer", ["enqueue", "--all-missing"])])
async def test_missing_configuration_exits_2_naming_every_variable(name: str, args: list[str]) -> None:
    """One message lists every missing variable; exit code 2; nothing else happens."""
    ran = await run_cli(name, args, {**CLEAN_ENV, "JELLYFIN_API_KEY": "do-not-print-me", "NATS_URL": "bogus"})
    assert ran.code == 2
    assert "SUPA_REST_URL" in ran.stderr
    assert "SUPABASE_SERVICE_ROLE_KEY" in ran.stderr
    assert "NATS_URL" in ran.stderr
    assert "do-not-print-me" not in ran.stderr + ran.stdout
    if name == "worker":
        assert "JELLYFIN_USER_ID" in ran.stderr


async def test_unreachable_nats_is_a_clear_error(stack: EmbeddedStack) -> None:
    """No NATS at the configured URL: a message naming it, exit 3, no traceback."""
    ran = await run_cli("producer", ["enqueue", "--all-missing"], stack.env(NATS_URL="nats://127.0.0.1:1"))
    assert ran.code == 3
    assert "cannot connect to NATS" in ran.stderr
    assert "Traceback" not in ran.stderr


async def test_a_command_gives_up_on_nats_after_its_first_two_seconds(stack: EmbeddedStack) -> None:
    """A producer command waits 2 s for NATS, not the ~10 s its reconnect attempts would take, and names
    the URL without its password and the last failure."""
    env = stack.env(NATS_URL="nats://backfill:hunter2@127.0.0.1:1")
    started = asyncio.get_running_loop().time()
    ran = await run_cli("producer", ["status"], env)
    took = asyncio.get_running_loop().time() - started
    assert ran.code == 3, ran.stderr
    assert "cannot connect to NATS at nats://***@127.0.0.1:1 within 2s:" in ran.stderr
    assert "hunter2" not in ran.stderr + ran.stdout
    assert took < 6, "2 s of connect attempts and the interpreter's start, far below 10 reconnects"


async def test_a_worker_that_cannot_reach_nats_exits_3_once_its_connect_timeout_is_spent(
    stack: EmbeddedStack,
) -> None:
    """BACKFILL_NATS_CONNECT_TIMEOUT bounds a worker's first connection: one warning while it waits, then
    one error naming the URL and why, exit 3 (compose restarts it), no traceback."""
    env = stack.env(
        NATS_URL="nats://127.0.0.1:1", BACKFILL_NATS_CONNECT_TIMEOUT="1", BACKFILL_LOG_FORMAT="json"
    )
    ran = await run_cli("worker", ["--metrics-port", "0"], env, timeout=30)
    assert ran.code == 3, ran.stderr
    lines = [json.loads(line) for line in ran.stderr.splitlines()]
    assert [line["level"] for line in lines] == ["warning", "error"], lines
    assert lines[0]["msg"].startswith("nats: not reachable yet, retrying for up to 1s: ")
    assert lines[1]["msg"].startswith(
        "worker cannot run: cannot connect to NATS at nats://127.0.0.1:1 within 1s: "
    )
    assert "Traceback" not in ran.stderr


async def test_a_worker_waiting_for_nats_stops_at_once_on_sigterm(stack: EmbeddedStack) -> None:
    """SIGTERM during the first connection's wait ends the worker with exit 0, before its timeout."""
    env = stack.env(
        NATS_URL="nats://127.0.0.1:1", BACKFILL_NATS_CONNECT_TIMEOUT="60", BACKFILL_LOG_FORMAT="json"
    )
    proc = await asyncio.create_subprocess_exec(
        cli("worker"), "--metrics-port", "0", env={**os.environ, **env}, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    first = json.loads(await asyncio.wait_for(proc.stderr.readline(), 30))  # waiting for NATS now
    assert first["msg"].startswith("nats: not reachable yet")
    proc.terminate()
    _, rest = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, rest.decode()
    assert "stopped before NATS answered" in rest.decode()


async def test_dry_run_lists_candidates_and_writes_nothing(stack: EmbeddedStack, layout_env: dict) -> None:
    """Dry run: the candidate count, a line per row, no stream created, no row changed."""
    before = {rid: dict(row) for rid, row in stack.catalog.rows.items()}
    ran = await run_cli(
        "producer", ["enqueue", "--all-missing", "--dry-run", "--json"], stack.env(**layout_env)
    )
    assert ran.code == 0, ran.stderr
    candidates = sum(1 for r in stack.rows.values() if r.expect != "untouched")
    report = json.loads(ran.stdout)  # one document: the summary, and every row inside it
    assert report["would_enqueue"] == candidates
    assert len(report["rows"]) == candidates
    assert {row["id"] for row in report["rows"]} == {
        rid for rid, r in stack.rows.items() if r.expect != "untouched"
    }
    assert stack.catalog.rows == before
    nc = await nats.connect(stack.nats_url)
    with pytest.raises(NotFoundError):
        await nc.jetstream().stream_info(layout_env["BACKFILL_STREAM"])
    await nc.drain()


async def test_preview_prints_worker_payloads_and_writes_nothing(
    stack: EmbeddedStack, layout_env: dict
) -> None:
    """Preview runs the enrichment read-only: payloads printed, no event, no write."""
    before = {rid: dict(row) for rid, row in stack.catalog.rows.items()}
    ran = await run_cli("producer", ["preview", "--limit", "13"], stack.env(**layout_env))
    assert ran.code == 0, ran.stderr
    records = [json.loads(chunk) for chunk in ran.stdout.replace("}\n{", "}\n\x00{").split("\x00")]
    assert len(records) == 13
    actions = {r["action"] for r in records}
    assert {"republish", "dead_letter"} <= actions
    for record in records:
        if record["action"] == "republish":
            assert record["payload"]["artifact_uri"].startswith("s3://")
            assert "backfill" in record["payload"]["tags"]
    assert stack.agent.envelopes == []
    assert stack.catalog.calls["rpc"] == 0
    assert stack.catalog.rows == before


async def test_listen_snapshot_and_diff_give_the_runbook_evidence(
    stack: EmbeddedStack, layout_env: dict, tmp_path
) -> None:
    """listen prints the envelopes of a run; snapshot before/after and diff show the keys the run added."""
    import asyncio

    from tests.e2e.processes import WorkerProcess

    env = stack.env(**layout_env)
    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    assert (await run_cli("producer", ["snapshot", "--out", str(before)], env)).code == 0
    listener = await asyncio.create_subprocess_exec(
        cli("producer"),
        *("listen", "--topics", "content.published.v1", "--max", "5", "--compact"),
        env={**os.environ, **env, "BACKFILL_LOG_FORMAT": "text"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # listen is core NATS: the run must publish only once it is subscribed, which it says on stderr
        assert listener.stderr is not None
        async with asyncio.timeout(30):
            while b"listening on" not in (line := await listener.stderr.readline()):
                assert line, "listen ended before subscribing"
        enq = await run_cli("producer", ["enqueue", "--all-missing", "--limit", "20"], env)
        assert enq.code == 0, enq.stderr
        assert await (await WorkerProcess(env, "--exit-when-idle", "2").start()).wait() == 0
        heard, _ = await asyncio.wait_for(listener.communicate(), 30)
    finally:
        if listener.returncode is None:
            listener.kill()
            await listener.wait()
    assert listener.returncode == 0
    assert len([line for line in heard.decode().splitlines() if "content.published.v1" in line]) == 5
    snap = await run_cli("producer", ["snapshot", "--out", str(after), "--ids-from", str(before)], env)
    assert snap.code == 0, snap.stderr
    report = await run_cli("producer", ["diff", str(before), str(after), "--json"], env)
    data = json.loads(report.stdout)
    assert data["totals"]["rows_changed"] >= 10
    assert data["totals"]["keys_added"]["jellyfin_public_url"] == data["totals"]["rows_changed"]


def enriched(rows: Iterable[dict[str, Any]], run_id: str | None = None) -> int:
    """Published rows carrying a Jellyfin public URL (only those the run `run_id` wrote, when given)."""
    return sum(
        1
        for row in rows
        if row["status"] == "published"
        and (row["meta"] or {}).get("jellyfin_public_url") is not None
        and (run_id is None or (row["meta"] or {}).get("backfill_run_id") == run_id)
    )


async def test_pause_holds_every_worker_and_resume_lets_them_finish(
    stack: EmbeddedStack, layout_env: dict
) -> None:
    """Paused: a running worker receives nothing and status says so; resumed: the backlog drains, and
    status counts the rows the run enriched against the rows still missing."""
    from tests.e2e.processes import WorkerProcess, eventually

    env = stack.env(**layout_env)
    published = sum(1 for row in stack.originals.values() if row["status"] == "published")
    enriched_before = enriched(stack.originals.values())
    enq = await run_cli(
        "producer",
        ["enqueue", "--all-missing", "--mode", "metadata-only", "--limit", "30", "--run-id", "run-status"],
        env,
    )
    assert enq.code == 0, enq.stderr
    paused = await run_cli("producer", ["pause"], env)
    assert paused.code == 0, paused.stdout + paused.stderr
    worker = await WorkerProcess(env).start()
    status = await run_cli("producer", ["status", "--json", "--sample", "1.5"], env)
    data = json.loads(status.stdout)
    assert data["paused"] is True
    assert data["backlog"] == 30
    assert data["in_flight"] == 0
    assert (data["rows_enriched"], data["rows_missing"]) == (enriched_before, published - enriched_before)
    assert stack.catalog.calls["rpc"] == 0  # nothing was processed while paused
    assert (await run_cli("producer", ["resume"], env)).code == 0
    await eventually(
        lambda: enriched(stack.catalog.rows.values(), "run-status") >= 10, what="work resumed", timeout=30
    )
    worker.terminate()
    assert await worker.wait() == 0
    by_run = enriched(stack.catalog.rows.values(), "run-status")
    assert by_run >= 10
    after = json.loads((await run_cli("producer", ["status", "--json", "--sample", "0.5"], env)).stdout)
    assert after["rows_enriched"] == enriched_before + by_run == enriched(stack.catalog.rows.values())
    assert after["rows_missing"] == published - after["rows_enriched"]
    table = await run_cli("producer", ["status", "--sample", "0.5"], env)
    assert (
        f"rows enriched / still missing  {after['rows_enriched']} / {after['rows_missing']}" in table.stdout
    )
    assert "dead letters" in table.stdout
    assert "running" in table.stdout


async def test_a_worker_that_cannot_reach_nats_still_stops_on_sigterm() -> None:
    """It retries the connection forever, and stops (exit 0) as soon as it is asked to."""
    from backfill_doubles.natsserver import free_port
    from tests.e2e.processes import WorkerProcess

    port = free_port()
    env = {
        "NATS_URL": f"nats://127.0.0.1:{port}",
        "SUPA_REST_URL": f"http://127.0.0.1:{port}",
        "SUPABASE_SERVICE_ROLE_KEY": "k",
        "JELLYFIN_URL": f"http://127.0.0.1:{port}",
        "JELLYFIN_API_KEY": "k",
        "JELLYFIN_USER_ID": "0" * 31 + "1",
    }
    worker = await WorkerProcess(env).start()
    assert worker.proc is not None and worker.proc.stderr is not None
    async with asyncio.timeout(30):  # started: its first attempt to reach NATS has failed
        while b"nats" not in (line := await worker.proc.stderr.readline()).lower():
            assert line, "the worker ended before trying NATS"
    worker.terminate()
    assert await worker.wait(10) == 0


async def test_a_pushgateway_that_cannot_be_reached_only_warns(stack: EmbeddedStack) -> None:
    """The rows are enqueued either way: exit 0, the summary on stdout, one warning on stderr."""
    from backfill_doubles.natsserver import free_port

    gateway = f"http://127.0.0.1:{free_port()}"
    ran = await run_cli(
        "producer", ["enqueue", "--all-missing", "--json", "--pushgateway", gateway], stack.env()
    )
    assert ran.code == 0, ran.stderr
    assert json.loads(ran.stdout.splitlines()[-1])["enqueued"] > 0
    assert "warning: the run's counts were not pushed to the Pushgateway" in ran.stderr
    assert "Traceback" not in ran.stderr
