"""`producer`: find studio_board rows without Jellyfin metadata and enqueue them for the workers."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from backfill import version_text
from backfill.core.errors import (
    BackfillError,
    ConfigError,
    Exit,
    exit_code,
)
from backfill.logs import setup_logging
from backfill.settings import (
    BackfillSettings,
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    SettingsBundle,
    StorageSettings,
    load_settings,
)
from producer.control import CONTROL_GROUPS, add_control_parsers, run_control
from producer.dlq_commands import add_dlq_parser, run_dlq
from producer.enqueue_commands import (
    add_enqueue_parser,
    add_preview_parser,
    dry_run,
    enqueue,
    new_run_id,
    run_preview,
)
from producer.evidence_commands import add_evidence_parsers, run_diff, run_listen, run_snapshot
from producer.layout_commands import add_layout_parser, run_layout
from producer.monitoring import add_monitoring_parser, run_monitoring
from producer.shell import (
    Interrupt,
    completion,
    guard_stdout,
    run,
    with_examples,
)
from producer.verify import VERIFY_GROUPS, add_verify_parser, run_verify
from producer.youtube_linking import (
    youtube_groups,
)

log = logging.getLogger("producer")


EXAMPLES = {
    "": """
producer enqueue --all-missing --dry-run      # what would be enqueued; writes nothing
producer enqueue --all-missing                # one request per candidate row
producer status                               # where the run stands
producer dlq list                             # what could not be resolved
producer completion bash > /etc/bash_completion.d/producer
""",
    "enqueue": """
producer enqueue --all-missing --dry-run --json | jq .would_enqueue
producer enqueue --all-missing --dry-run --jsonl > candidates.jsonl
producer enqueue --all-missing --mode metadata-only
producer enqueue --ids 12,15 --run-id fix-2026-12-06
""",
    "preview": "producer preview --limit 3\nproducer preview --ids 12 --json | jq '.rows[0].payload'",
    "status": "producer status\nproducer status --json --sample 0 | jq .backlog",
    "pause": "producer pause\nproducer pause --pushgateway http://backfill-pushgateway:9091 --json",
    "resume": "producer resume",
    "layout": "producer layout            # what differs from this environment (exit 1 when anything does)\n"
    "producer layout --apply    # show the differences, then make them",
    "dlq": "producer dlq list\nproducer dlq replay --reason jellyfin_not_found --dry-run",
    "dlq list": "producer dlq list --reason ambiguous_match\n"
    "producer dlq list --json | jq '.dead_letters[].row_id'",
    "dlq show": "producer dlq show 42",
    "dlq replay": "producer dlq replay --reason jellyfin_not_found\nproducer dlq replay --ids 12,15 --json",
    "dlq purge": "producer dlq purge --reason invalid_message --yes",
    "listen": "producer listen --topics content.published.v1 --max 5 --compact",
    "snapshot": "producer snapshot --out before.jsonl\n"
    "producer snapshot --out after.jsonl --ids-from before.jsonl",
    "diff": "producer diff before.jsonl after.jsonl\nproducer diff before.jsonl after.jsonl --json",
    "monitoring": "producer monitoring --prometheus-config PMOVES/monitoring/prometheus/prometheus.yml "
    "--out PMOVES/monitoring/backfill",
    "completion": 'source <(producer completion bash)\nproducer completion zsh > "${fpath[1]}/_producer"',
    "verify": "producer verify --run-id run-20261206T101500Z-a1b2c3\n"
    "producer verify --ids 12,15 --json | jq .totals",
}


EXIT_CODES = """exit codes:
  0    done                                  1    done, but something failed (or, layout: differs)
  2    usage or configuration error          3    NATS, JetStream or an upstream refused or was out of reach
  4    what the command reads does not exist 130  interrupted (Ctrl-C)   143  terminated (SIGTERM)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="producer", description=__doc__)
    parser.add_argument("--version", action="version", version=version_text("producer"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_enqueue_parser(commands)
    add_verify_parser(commands)
    add_dlq_parser(commands)
    add_evidence_parsers(commands)
    add_control_parsers(commands)
    add_monitoring_parser(commands)
    add_preview_parser(commands)
    add_layout_parser(commands)
    shells = commands.add_parser("completion", help="print a shell completion script")
    shells.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")
    with_examples(parser, EXAMPLES)
    parser.epilog = f"{parser.epilog}\n{EXIT_CODES}"
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "preview" and args.limit is None and not args.ids:
        args.limit = 5
    if args.command == "enqueue" and args.jsonl and not args.dry_run:
        parser.error("--jsonl lists the rows of a --dry-run")
    if getattr(args, "jsonl", False) and args.json:
        parser.error("--json and --jsonl: choose one")
    return args


async def run_dlq_command(settings: SettingsBundle, args: argparse.Namespace) -> int:
    return await run_dlq(settings, args, f"replay-{new_run_id().removeprefix('run-')}")


GROUPS: dict[str, list[type[Any]]] = {
    "dlq": [NatsSettings, BackfillSettings],
    "listen": [NatsSettings, BackfillSettings],
    "snapshot": [CatalogSettings, BackfillSettings],
    "diff": [BackfillSettings],
    "layout": [NatsSettings, BackfillSettings],
    "preview": [CatalogSettings, JellyfinSettings, StorageSettings, BackfillSettings],
    "verify": VERIFY_GROUPS,
    **CONTROL_GROUPS,
}


def groups_for(args: argparse.Namespace) -> list[type[Any]]:
    """Only the settings a command needs: a dry run needs no NATS, a diff needs nothing remote."""
    if args.command == "enqueue":
        return (
            [CatalogSettings, BackfillSettings, *youtube_groups(args)]
            if args.dry_run
            else [NatsSettings, CatalogSettings, BackfillSettings]
        )
    return GROUPS[args.command] + youtube_groups(args)


def main(argv: list[str] | None = None) -> int:
    return guard_stdout("producer", _main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args.command == "completion":
        print(completion("producer", build_parser(), args.shell), end="")
        return int(Exit.OK)
    if args.command == "monitoring":  # writes files only: no settings, no network
        return run_monitoring(args)
    try:
        settings = load_settings(groups_for(args))
    except ConfigError as exc:
        print(f"producer: {exc}", file=sys.stderr)
        return int(Exit.CONFIG)
    setup_logging(settings.get(BackfillSettings).log_format)
    commands = {
        "preview": run_preview,
        "enqueue": dry_run if getattr(args, "dry_run", False) else enqueue,
        "dlq": run_dlq_command,
        "listen": run_listen,
        "snapshot": run_snapshot,
        "diff": run_diff,
        "pause": run_control,
        "resume": run_control,
        "status": run_control,
        "layout": run_layout,
        "verify": run_verify,
    }
    args.interrupt = Interrupt()
    try:
        return run("producer", commands[args.command](settings, args), args.interrupt)
    except BackfillError as exc:
        print(f"producer: {exc}", file=sys.stderr)
        return int(exit_code(exc))


if __name__ == "__main__":
    sys.exit(main())
