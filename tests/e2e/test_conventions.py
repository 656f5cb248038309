"""The installed CLIs behave like the tools operators know (docs/configuration.md, "Exit codes ...").

`--version`; `--help` with examples for every command and help for every option; one JSON document
on stdout per `--json` command; errors on stderr with the documented exit code; Ctrl-C and SIGTERM
end an enqueue with its summary (130 / 143, no traceback); commands that only read never create or
change a stream or the consumer; `status` without catalog credentials; shell completion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from backfill_doubles.stack import EmbeddedStack, StackOptions
from producer.cli import build_parser
from producer.shell import subparsers
from tests.e2e.conftest import Ran, cli, run_cli
from tests.e2e.processes import WorkerProcess, eventually

pytestmark = pytest.mark.slow
COMMANDS = sorted(subparsers(build_parser()))


def one_document(ran: Ran) -> dict[str, Any]:
    """stdout holds exactly one JSON document (json.loads refuses anything more or less)."""
    assert "Traceback" not in ran.stderr, ran.stderr
    data: dict[str, Any] = json.loads(ran.stdout)
    return data


async def stream_exists(url: str, name: str) -> bool:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().stream_info(name)
        return True
    except NotFoundError:
        return False
    finally:
        await nc.drain()


async def consumer_config(url: str, stream: str, durable: str) -> tuple[float | None, int | None]:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        return info.config.ack_wait, info.config.max_deliver
    finally:
        await nc.drain()


@pytest.mark.parametrize("program", ["producer", "worker"])
async def test_version(program: str) -> None:
    ran = await run_cli(program, ["--version"], {})
    assert ran.code == 0
    assert ran.stdout.startswith(f"{program} 0.")
    assert "pmoves-jellyfin-backfill" in ran.stdout


def test_every_option_of_every_command_has_help() -> None:
    """Checked on the parser the CLI builds: no option without help text, choices listed by argparse."""
    missing = [
        f"{name or 'producer'} {action.option_strings or action.dest}"
        for name, parser in {"": build_parser(), **subparsers(build_parser())}.items()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


async def test_help_of_every_command_lists_its_examples() -> None:
    runs = await asyncio.gather(*(run_cli("producer", [*name.split(), "--help"], {}) for name in COMMANDS))
    for name, ran in zip(COMMANDS, runs, strict=True):
        assert ran.code == 0, (name, ran.stderr)
        assert "examples:" in ran.stdout, name
        assert f"producer {name}" in ran.stdout.split("examples:")[1], name
    top = await run_cli("producer", ["--help"], {})
    assert "exit codes:" in top.stdout
    worker = await run_cli("worker", ["--help"], {})
    assert "examples:" in worker.stdout and "130" in worker.stdout
    assert "{republish,metadata-only}" in runs[COMMANDS.index("enqueue")].stdout  # choices listed


async def test_every_json_command_prints_one_document(
    stack: EmbeddedStack, layout_env: dict, tmp_path: Path
) -> None:
    env = stack.env(**layout_env)
    dry = one_document(await run_cli("producer", ["enqueue", "--all-missing", "--dry-run", "--json"], env))
    assert dry["would_enqueue"] == len(dry["rows"]) > 0
    jsonl = await run_cli("producer", ["enqueue", "--all-missing", "--dry-run", "--jsonl"], env)
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [row["id"] for row in lines] == [row["id"] for row in dry["rows"]]
    assert "would enqueue" in jsonl.stderr
    preview = one_document(await run_cli("producer", ["preview", "--limit", "3", "--json"], env))
    assert len(preview["rows"]) == 3
    enqueued = one_document(await run_cli("producer", ["enqueue", "--all-missing", "--json"], env))
    assert enqueued["enqueued"] == dry["would_enqueue"] and enqueued["interrupted"] is None
    status = one_document(await run_cli("producer", ["status", "--json", "--sample", "0"], env))
    assert status["backlog"] == enqueued["enqueued"]
    paused = one_document(await run_cli("producer", ["pause", "--json"], env))
    assert paused["paused"] is True and paused["consumer"] == layout_env["BACKFILL_CONSUMER"]
    resumed = one_document(await run_cli("producer", ["resume", "--json"], env))
    assert resumed["paused"] is False
    layout = one_document(await run_cli("producer", ["layout", "--json"], env))
    assert layout == {"applied": False, "changes": []}
    listed = one_document(await run_cli("producer", ["dlq", "list", "--json"], env))
    assert listed == {"dead_letters": [], "total": 0}
    streamed = await run_cli("producer", ["dlq", "list", "--jsonl"], env)
    assert (streamed.code, streamed.stdout, streamed.stderr) == (0, "", "")
    replayed = one_document(await run_cli("producer", ["dlq", "replay", "--all", "--json"], env))
    assert replayed["total"] == 0 and replayed["replayed"] == 0
    purged = one_document(await run_cli("producer", ["dlq", "purge", "--all", "--yes", "--json"], env))
    assert purged["purged"] == 0
    snap = tmp_path / "snap.jsonl"
    written = one_document(await run_cli("producer", ["snapshot", "--out", str(snap), "--json"], env))
    assert written["rows"] == len(snap.read_text().splitlines())
    compared = one_document(await run_cli("producer", ["diff", str(snap), str(snap), "--json"], env))
    assert compared["totals"]["rows_changed"] == 0
    out = tmp_path / "monitoring"
    prom = tmp_path / "prometheus.yml"
    prom.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    monitoring = await run_cli(
        "producer", ["monitoring", "--prometheus-config", str(prom), "--out", str(out), "--json"], env
    )
    assert one_document(monitoring)


async def test_errors_go_to_stderr_with_their_exit_code(stack: EmbeddedStack, layout_env: dict) -> None:
    env = stack.env(**layout_env)
    assert (await run_cli("producer", ["enqueue", "--ids", "1", "--json"], env)).code == 0  # the layout
    cases = [
        (["dlq", "show", "999999"], 4, "no dead letter with sequence 999999"),
        (["dlq", "purge", "--all"], 2, "add --yes"),
        (["diff", "/nonexistent/before.jsonl", "/nonexistent/after.jsonl"], 4, "no snapshot at"),
        (["enqueue", "--ids", "x"], 2, "comma-separated integers"),
    ]
    for args, code, message in cases:
        ran = await run_cli("producer", args, env)  # exit 3 (NATS out of reach): test_cli.py
        assert (ran.code, ran.stdout) == (code, ""), (args, ran)
        assert message in ran.stderr, (args, ran.stderr)
        assert "Traceback" not in ran.stderr


async def test_read_only_commands_create_nothing(nats_url: str, layout_env: dict) -> None:
    """Against a server without the stream: each says what is missing (exit 4), and it stays missing."""
    env = {**layout_env, "NATS_URL": nats_url, "SUPA_REST_URL": "", "CATALOG_DSN": ""}
    for args in (
        ["status"],
        ["dlq", "list"],
        ["dlq", "show", "1"],
        ["dlq", "replay", "--all"],
        ["pause"],
        ["resume"],
    ):
        ran = await run_cli("producer", args, env)
        assert ran.code == 4, (args, ran)
        assert layout_env["BACKFILL_STREAM"] in ran.stderr or layout_env["BACKFILL_CONSUMER"] in ran.stderr, (
            args
        )
        assert "BACKFILL_STREAM" in ran.stderr, (args, ran.stderr)
    planned = await run_cli("producer", ["layout", "--json"], env)
    assert planned.code == 1  # differences: all of it is missing
    assert {c["action"] for c in one_document(planned)["changes"]} == {"create"}
    assert not await stream_exists(nats_url, layout_env["BACKFILL_STREAM"])
    assert not await stream_exists(nats_url, layout_env["BACKFILL_DLQ_STREAM"])


async def test_no_command_changes_the_consumer_unless_asked(stack: EmbeddedStack, layout_env: dict) -> None:
    """Another BACKFILL_ACK_WAIT in the shell: status, enqueue and a worker leave the consumer as it is
    (they warn); `layout` shows the difference (exit 1); `layout --apply` makes it."""
    env = stack.env(**layout_env)
    stream, durable = layout_env["BACKFILL_STREAM"], layout_env["BACKFILL_CONSUMER"]
    assert (await run_cli("producer", ["enqueue", "--ids", "1"], env)).code == 0
    assert await consumer_config(stack.nats_url, stream, durable) == (60.0, 10)
    other = {**env, "BACKFILL_ACK_WAIT": "5", "BACKFILL_MAX_DELIVER": "3"}
    status = await run_cli("producer", ["status", "--sample", "0"], other)
    assert status.code == 0, status.stderr
    enqueue = await run_cli("producer", ["enqueue", "--ids", "2"], other)
    assert enqueue.code == 0 and "producer layout --apply" in enqueue.stderr
    worker = await WorkerProcess(other, "--exit-when-idle", "1").start()
    assert await worker.wait(60) == 0
    assert b"producer layout --apply" in worker.stderr
    assert await consumer_config(stack.nats_url, stream, durable) == (60.0, 10)
    planned = await run_cli("producer", ["layout"], other)
    assert planned.code == 1
    assert f"~ consumer {durable}: ack_wait 60.0 -> 5.0, max_deliver 10 -> 3" in planned.stdout
    applied = await run_cli("producer", ["layout", "--apply", "--json"], other)
    assert applied.code == 0 and one_document(applied)["applied"] is True
    assert await consumer_config(stack.nats_url, stream, durable) == (5.0, 3)
    assert (await run_cli("producer", ["layout"], other)).code == 0


async def test_status_shows_the_queue_without_catalog_credentials(
    stack: EmbeddedStack, layout_env: dict
) -> None:
    env = stack.env(**layout_env)
    assert (await run_cli("producer", ["enqueue", "--all-missing"], env)).code == 0
    bare = {**layout_env, "NATS_URL": stack.nats_url, "SUPA_REST_URL": "", "SUPABASE_SERVICE_ROLE_KEY": ""}
    ran = await run_cli("producer", ["status", "--json", "--sample", "0"], {**bare, "CATALOG_DSN": ""})
    assert ran.code == 0, ran.stderr
    status = one_document(ran)
    assert status["backlog"] > 0 and status["rows_missing"] is None and status["rows_enriched"] is None
    assert "row counts need the catalog" in ran.stderr
    full = one_document(await run_cli("producer", ["status", "--json", "--sample", "0"], env))
    assert full["rows_missing"] is not None and full["rows_missing"] > 0


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_signal_mid_enqueue_ends_it_with_a_summary(
    nats_url: str, layout_env: dict, sig: signal.Signals, code: int
) -> None:
    """The first page is enqueued, the signal arrives while the next is read: no further row is
    published, the summary says what was enqueued and why it stopped, and the stream holds exactly that."""
    with EmbeddedStack(StackOptions(size=2600, nats_url=nats_url, contracts_dir=None)) as stack:
        stack.catalog.latency = 1.0  # every catalog request takes a second: time to signal between pages
        env = stack.env(**layout_env)
        proc = await asyncio.create_subprocess_exec(
            cli("producer"),
            *("enqueue", "--all-missing", "--json"),
            env={**os.environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            nc = await nats.connect(nats_url)
            js = nc.jetstream()

            async def first_page_stored() -> bool:
                try:
                    return (await js.stream_info(layout_env["BACKFILL_STREAM"])).state.messages >= 1000
                except NotFoundError:
                    return False

            await eventually(first_page_stored, 60, "the first page enqueued")
            proc.send_signal(sig)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            stored = (await js.stream_info(layout_env["BACKFILL_STREAM"])).state.messages
            await nc.drain()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err
    summary = json.loads(out)
    assert summary["interrupted"] == sig.name
    assert summary["enqueued"] == stored < 2600 - 1  # stopped before the end; nothing unreported
    assert summary["unconfirmed"] == 0 and summary["failed"] == 0


async def test_a_worker_stopped_with_ctrl_c_exits_130(stack: EmbeddedStack, layout_env: dict) -> None:
    worker = await WorkerProcess(stack.env(**layout_env)).start()
    assert worker.proc is not None and worker.proc.stderr is not None
    async with asyncio.timeout(30):
        while b"worker started" not in (line := await worker.proc.stderr.readline()):
            assert line, "the worker ended before starting"
    worker.proc.send_signal(signal.SIGINT)
    assert await worker.wait(30) == 130
    assert b"Traceback" not in worker.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh"])
async def test_completion_completes_commands_options_and_choices(shell: str, tmp_path: Path) -> None:
    ran = await run_cli("producer", ["completion", shell], {})
    assert ran.code == 0 and "complete -o default -F _producer_complete producer" in ran.stdout
    bash_script = completion_script = ran.stdout
    if shell == "zsh":  # zsh runs the bash script through bashcompinit: the same script behind one line
        assert completion_script.startswith("autoload -U +X bashcompinit && bashcompinit\n")
        bash_script = completion_script.removeprefix("autoload -U +X bashcompinit && bashcompinit\n")
        assert bash_script == (await run_cli("producer", ["completion", "bash"], {})).stdout.replace(
            "completion for bash", "completion for zsh"
        ).replace("completion bash)", "completion zsh)")
    script = tmp_path / "completion"
    script.write_text(bash_script)

    async def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        probe = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
            '_producer_complete; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        proc = await asyncio.create_subprocess_exec("bash", "-c", probe, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out.decode().split()

    assert await complete("producer", "dl") == ["dlq"]
    assert {"list", "purge", "replay", "show"} <= set(await complete("producer", "dlq", ""))
    assert await complete("producer", "enqueue", "--all") == ["--all-missing"]
    assert await complete("producer", "enqueue", "--mode", "m") == ["metadata-only"]
    assert "jellyfin_not_found" in await complete("producer", "dlq", "replay", "--reason", "")
    assert await complete("producer", "dlq", "list", "--js") == ["--json", "--jsonl"]


async def test_ctrl_c_ends_any_command_with_130_and_no_traceback(stack: EmbeddedStack) -> None:
    """A command that cannot stop well (listen waits on core NATS) is cancelled at once: 130."""
    proc = await asyncio.create_subprocess_exec(
        cli("producer"),
        "listen",
        env={**os.environ, **stack.env(), "BACKFILL_LOG_FORMAT": "text"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"listening on" not in (line := await proc.stderr.readline()):
                assert line, "listen ended before subscribing"
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 130
    assert b"stopped by SIGINT" in err and b"Traceback" not in err
