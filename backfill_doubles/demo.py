"""`make demo`: the whole backfill on an embedded stack, with nothing installed but Python.

Starts nats-server, an S3 API and the Jellyfin / Agent Zero / PMOVES.yt / PostgREST doubles seeded with
a mixed catalog, runs `producer enqueue --all-missing --link-youtube` and two `worker` processes, then
`producer verify` on what publisher-discord's double recorded and on the Discord channel itself, and prints
a before/after summary.
Ctrl-C (or SIGTERM) at any point, or a failed start, stops every process and removes every temporary
directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from backfill.adapters.jetstream.bus import Bus
from backfill.adapters.jetstream.deadletters import dead_letter_counts
from backfill.adapters.jetstream.layout import build_layout
from backfill.adapters.jetstream.listen import subscribe
from backfill.settings import NatsSettings
from backfill_doubles.natsserver import free_port
from backfill_doubles.publisher_discord import PublisherDiscord
from backfill_doubles.stack import EmbeddedStack, StackOptions

RUN_ID = "demo-run"


def cli(name: str) -> str:
    """An installed console script: on PATH, else beside this interpreter (a venv not on PATH)."""
    beside = Path(sys.executable).parent / name
    return shutil.which(name) or str(beside)


async def spawn(
    name: str, args: list[str], env: dict[str, str], log: Path | None
) -> asyncio.subprocess.Process:
    """Start a CLI; with `log`, its stderr goes to that file instead of the terminal."""
    if log is None:
        return await asyncio.create_subprocess_exec(cli(name), *args, env={**os.environ, **env})
    with log.open("wb") as sink:
        return await asyncio.create_subprocess_exec(cli(name), *args, env={**os.environ, **env}, stderr=sink)


def show_failure(log: Path, code: int) -> None:
    tail = log.read_text(errors="replace").splitlines()[-30:]
    print(f"worker exited {code}; last lines of its log:\n  " + "\n  ".join(tail), file=sys.stderr)


async def dead_letters(url: str) -> dict[str, int]:
    bus = await Bus.connect(url, "backfill-demo", reconnect_forever=False)
    try:
        return await dead_letter_counts(bus.js, build_layout(NatsSettings()))
    finally:
        await bus.drain()


async def row_summary(stack: EmbeddedStack) -> dict[str, int]:
    rows = await stack.current_rows()
    published = [r for r in rows if r["status"] == "published"]
    enriched = [r for r in published if (r["meta"] or {}).get("jellyfin_public_url")]
    return {
        "rows": len(rows),
        "published": len(published),
        "with_jellyfin_url": len(enriched),
        "missing_jellyfin_url": len(published) - len(enriched),
        "youtube_linked": sum(1 for r in enriched if r["meta"].get("related_youtube")),
    }


async def verify(env: dict[str, str], source: str) -> dict[str, int]:
    """`producer verify --run-id` on the demo's run, from `source`: the totals of its report (exit 1, a
    row not delivered, is a finding, not a failure of the demo)."""
    proc = await asyncio.create_subprocess_exec(
        cli("producer"),
        "verify",
        "--run-id",
        RUN_ID,
        "--source",
        source,
        "--json",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode not in (0, 1):
        raise DemoFailed(f"producer verify exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    totals: dict[str, int] = json.loads(out)["totals"]
    return totals


async def listen(url: str, seen: list[dict[str, Any]]) -> Bus:
    bus = await Bus.connect(url, "backfill-demo listen", reconnect_forever=False)
    await subscribe(
        bus.nc, ["content.published.v1"], lambda _subject, data, _headers: seen.append(json.loads(data))
    )
    return bus


async def run(stack: EmbeddedStack, args: argparse.Namespace) -> dict[str, Any]:
    before = await row_summary(stack)
    print(
        f"catalog: {before['rows']} rows, {before['published']} published, of which"
        f" {before['missing_jellyfin_url']} lack Jellyfin metadata; enqueueing them",
        flush=True,
    )
    env = stack.env(
        BACKFILL_LOG_FORMAT="text" if sys.stderr.isatty() else "json",
        BACKFILL_PACE_PER_MINUTE=f"{args.pace:g}",
    )
    envelopes: list[dict[str, Any]] = []
    listener = await listen(stack.nats_url, envelopes)
    discord = PublisherDiscord(stack.discord_webhook, recorder=stack.discord_recorder())
    await discord.start(stack.nats_url)
    enqueue = ["enqueue", "--all-missing", "--link-youtube", "--run-id", RUN_ID]
    producer = await spawn("producer", enqueue, env, None)
    if await producer.wait() != 0:
        raise DemoFailed(f"producer enqueue exited {producer.returncode}")
    ports = [free_port() for _ in range(args.workers)]
    logs = [stack.workdir / f"worker-{n}.log" for n in range(len(ports))]
    workers = [
        await spawn(
            "worker",
            ["--exit-when-idle", "2", "--metrics-port", str(port)],
            env,
            None if args.verbose else log,
        )
        for port, log in zip(ports, logs, strict=True)
    ]
    print(
        "workers running; metrics at " + ", ".join(f"http://127.0.0.1:{p}/metrics" for p in ports), flush=True
    )
    try:
        codes = [await w.wait() for w in workers]
        for code, log in zip(codes, logs, strict=True):
            if code != 0 and log.exists():
                show_failure(log, code)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
                await worker.wait()
    await listener.drain()
    await discord.close()
    if discord.record_errors:
        raise DemoFailed(f"publisher-discord could not record deliveries: {discord.record_errors[0]}")
    after = await row_summary(stack)
    return {
        "before": before,
        "after": after,
        "worker_exit_codes": codes,
        "enriched": after["with_jellyfin_url"] - before["with_jellyfin_url"],
        "envelopes_published": len(envelopes),
        "dead_letters": await dead_letters(stack.nats_url),
        "discord": {
            "embeds_received": len(stack.discord.messages),
            "rate_limited_429": stack.discord.rate_limited,
            "lost_after_3_attempts": discord.dropped,
            "not_posted_when_the_demo_ended": len(envelopes) - discord.posted - discord.dropped,
        },
        "youtube_linked_rows": after["youtube_linked"],
        "verify": await verify(env, "metrics"),
        "verify_channel": await verify(env, "discord"),
    }


def table(summary: dict[str, Any]) -> str:
    """The summary in words, aligned: the catalog before and after, then what the run did."""
    before, after, discord = summary["before"], summary["after"], summary["discord"]
    catalog = [
        ("rows in the catalog", "rows"),
        ("published", "published"),
        ("published, with Jellyfin metadata", "with_jellyfin_url"),
        ("published, still without", "missing_jellyfin_url"),
    ]
    letters = summary["dead_letters"]
    run = [
        ("rows enriched by this run", str(summary["enriched"])),
        ("events republished (content.published.v1)", str(summary["envelopes_published"])),
        (
            "dead letters",
            f"{sum(letters.values())}"
            + (" (" + ", ".join(f"{reason} {n}" for reason, n in letters.items()) + ")" if letters else ""),
        ),
        ("worker exit codes", ", ".join(str(code) for code in summary["worker_exit_codes"])),
        ("Discord embeds received", str(discord["embeds_received"])),
        ("Discord rate limits (429)", str(discord["rate_limited_429"])),
        ("Discord embeds lost after 3 attempts", str(discord["lost_after_3_attempts"])),
        ("Discord embeds still queued at the end", str(discord["not_posted_when_the_demo_ended"])),
    ]
    if "verify" in summary:
        checked = summary["verify"]
        run.insert(2, ("rows linked to YouTube videos", str(summary["youtube_linked_rows"])))
        run.append(
            (
                "Discord delivery (producer verify)",
                f"{checked['delivered']} delivered, {checked['failed']} failed,"
                f" {checked['not_seen']} not seen",
            )
        )
    if "verify_channel" in summary:
        seen = summary["verify_channel"]
        run.append(
            (
                "Discord channel (verify --source discord)",
                f"{seen['delivered']} delivered, {seen['not_seen']} not seen, {seen['duplicated']} twice",
            )
        )
    width = max(len(label) for label, _ in catalog + run)
    lines = ["", "Backfill summary", "", f"  {'catalog':<{width}}  {'before':>7}  {'after':>7}"]
    lines += [f"  {label:<{width}}  {before[key]:>7}  {after[key]:>7}" for label, key in catalog]
    lines += [""] + [f"  {label:<{width}}  {value}" for label, value in run]
    return "\n".join(lines)


NEXT_STEPS = (
    "Next, on your own stack: `producer status` shows a run's progress, each worker's /metrics (port 9108)\n"
    "feeds Prometheus and Grafana, `producer dlq list` says why rows were set aside, `producer verify\n"
    "--run-id R` whether Discord got the embeds (README: Runbook)."
)


class DemoFailed(Exception):
    """The demo cannot go on; the message says why."""


def start(stack: EmbeddedStack) -> None:
    try:
        stack.start()
    except (RuntimeError, OSError) as exc:  # TimeoutError (a port never opened) is an OSError
        raise DemoFailed(f"the embedded stack did not start: {exc}") from exc
    catalog = stack.postgres_dsn or stack.urls.get("catalog")
    print(
        f"embedded stack up in {stack.workdir}: nats {stack.nats_url}, catalog {catalog},"
        f" doubles {stack.urls}",
        flush=True,
    )


class Terminated(BaseException):
    """SIGTERM: leave the same way as Ctrl-C, through every cleanup. A BaseException, like
    KeyboardInterrupt: raised wherever the signal lands, no `except Exception` on the way may take it
    for an ordinary failure (the demo then said "demo failed", exit 1)."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backfill_doubles.demo", description=__doc__)
    parser.add_argument("--size", type=int, default=300, help="rows in the seeded catalog")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--pace",
        type=float,
        default=0,
        metavar="PER_MINUTE",
        help="the global republish pace (BACKFILL_PACE_PER_MINUTE; production default 30); 0: unpaced",
    )
    parser.add_argument("--verbose", action="store_true", help="show the workers' logs")
    parser.add_argument("--json", action="store_true", help="print the final summary as JSON")
    parser.add_argument(
        "--catalog",
        choices=["postgres", "postgrest"],
        default="postgres",
        help="a real embedded PostgreSQL (CATALOG_DSN), or the PostgREST double",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C stops the demo even when it was started from a shell that ignores SIGINT (a background
    # job without job control inherits SIG_IGN, and Python keeps it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = EmbeddedStack(StackOptions(size=args.size, catalog=args.catalog, discord_metrics=True))
    try:
        start(stack)
        summary = asyncio.run(run(stack, args))
    except (KeyboardInterrupt, Terminated):
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    except DemoFailed as exc:
        print(f"demo failed: {exc}\nEverything it had started is stopped.", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    if args.json:
        print(json.dumps(summary))
    else:
        print(table(summary))
        print(f"\n{NEXT_STEPS}")
    return 0 if all(code == 0 for code in summary["worker_exit_codes"]) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # after the stack was stopped (e.g. while the summary printed)
        sys.exit(130)
