"""`worker`: consume backfill requests from JetStream until stopped (SIGTERM/SIGINT)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from backfill import version_text
from backfill.core.errors import BackfillError, ConfigError, Exit
from backfill.eventloop import event_loop_runner
from backfill.logs import setup_logging
from backfill.settings import (
    AgentZeroSettings,
    BackfillSettings,
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    SettingsBundle,
    StorageSettings,
    WorkerSettings,
    YoutubeSettings,
    load_settings,
)
from worker.service import WorkerOptions, serve

STOP_SIGNALS: list[signal.Signals] = []  # the signals that stopped this process, first first
EXAMPLES = """exit codes: 0 stopped by SIGTERM (or idle with --exit-when-idle), 2 configuration error,
3 NATS or an upstream cannot be used at start, 130 stopped by SIGINT (Ctrl-C), in-flight work drained

examples:
  worker                                   # one replica; settings from the environment
  worker --concurrency 32 --metrics-port 0
  worker --exit-when-idle 30               # one-shot: exit once the queue stays empty for 30 s
"""
log = logging.getLogger("worker")
GROUPS = (
    NatsSettings,
    CatalogSettings,
    JellyfinSettings,
    AgentZeroSettings,
    StorageSettings,
    BackfillSettings,
    WorkerSettings,
    YoutubeSettings,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=version_text("worker"))
    parser.add_argument(
        "--concurrency", type=int, help="messages handled at once (env WORKER_CONCURRENCY, 128)"
    )
    parser.add_argument(
        "--fetch-batch", type=int, help="most messages per fetch (env WORKER_FETCH_BATCH, 32)"
    )
    parser.add_argument("--metrics-port", type=int, help="port for /metrics, /healthz, /readyz (0 = any)")
    parser.add_argument("--grace", type=float, help="seconds to finish in-flight work on SIGTERM (25)")
    parser.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit 0 once the consumer has had nothing pending or in flight for SECONDS (one-shot runs)",
    )
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace, worker: WorkerSettings) -> WorkerOptions:
    return WorkerOptions.resolve(
        worker,
        concurrency=args.concurrency,
        fetch_batch=args.fetch_batch,
        metrics_port=args.metrics_port,
        grace=args.grace,
        exit_when_idle=args.exit_when_idle,
    )


async def run(settings: SettingsBundle, options: WorkerOptions) -> int:
    """Serve until SIGTERM or SIGINT (or idle, with --exit-when-idle)."""
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopped_by, sig, stop)
    await serve(settings, options, stop)
    return 0


def stopped_by(sig: signal.Signals, stop: asyncio.Event) -> None:
    """SIGTERM: a normal stop (exit 0, as orchestrators expect); SIGINT: the same drain, exit 130."""
    STOP_SIGNALS.append(sig)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the event loop took the signal over
        print("worker: interrupted", file=sys.stderr)
        return int(Exit.INTERRUPTED)
    return int(Exit.INTERRUPTED) if code == 0 and signal.SIGINT in STOP_SIGNALS[:1] else code


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(GROUPS)
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return int(Exit.CONFIG)
    setup_logging(settings.get(BackfillSettings).log_format)
    try:
        runner = event_loop_runner(settings.get(WorkerSettings).event_loop)
    except ConfigError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return int(Exit.CONFIG)
    try:
        return runner(run(settings, options_from(args, settings.get(WorkerSettings))))
    except BackfillError as exc:
        log.error("worker cannot run: %s", exc)  # noqa: TRY400 - the message is the whole story
        return int(Exit.UNAVAILABLE)


if __name__ == "__main__":
    sys.exit(main())
