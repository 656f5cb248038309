"""`producer`: find studio_board rows without Jellyfin metadata and enqueue them for the workers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Collection

from backfill import version_text
from backfill.core.errors import BackfillError, ConfigError, Exit, exit_code
from backfill.logs import setup_logging
from producer.commands import COMMANDS, load
from producer.shell import Command, Interrupt, LocalCommand, guard_stdout, run, with_examples

log = logging.getLogger("producer")


EXAMPLES = """
producer enqueue --all-missing --dry-run      # what would be enqueued; writes nothing
producer enqueue --all-missing                # one request per candidate row
producer status                               # where the run stands
producer dlq list                             # what could not be resolved
producer completion bash > /etc/bash_completion.d/producer
"""


EXIT_CODES = """exit codes:
  0    done                                  1    done, but something failed (or, layout: differs)
  2    usage or configuration error          3    NATS, JetStream or an upstream refused or was out of reach
  4    what the command reads does not exist 130  interrupted (Ctrl-C)   143  terminated (SIGTERM)"""


def build_parser(names: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The program's parser: every command listed with its summary (`producer.commands`), with the
    arguments and examples of the commands in `names` (of every command when None), whose modules are
    imported for it."""
    parser = argparse.ArgumentParser(prog="producer", description=__doc__)
    parser.add_argument("--version", action="version", version=version_text("producer"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    examples = {"": EXAMPLES}
    for name, info in COMMANDS.items():
        sub = commands.add_parser(name, help=info.summary)
        if names is None or name in names:
            command = load(name)
            command.arguments(sub)
            examples |= command.examples
    with_examples(parser, examples)
    parser.epilog = f"{parser.epilog}\n{EXIT_CODES}"
    return parser


def named_command(argv: list[str]) -> list[str]:
    """The command `argv` names (its first word that is not an option): the one module the parser
    needs; none for `producer --help` or `--version`, or a name that is no command."""
    first = next((word for word in argv if not word.startswith("-")), None)
    return [first] if first in COMMANDS else []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(named_command(words))
    args = parser.parse_args(words)
    command = load(args.command)
    if isinstance(command, Command) and (error := command.check(args)):
        parser.error(error)
    if getattr(args, "jsonl", False) and args.json:
        parser.error("--json and --jsonl: choose one")
    return args


def main(argv: list[str] | None = None) -> int:
    return guard_stdout("producer", _main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    command = load(args.command)
    if isinstance(command, LocalCommand):  # writes files or prints: no settings, no network
        return command.run(args, build_parser)
    from backfill.settings import BackfillSettings, load_settings  # noqa: PLC0415 - pydantic: only to run

    try:
        settings = load_settings(command.settings(args))
    except ConfigError as exc:
        print(f"producer: {exc}", file=sys.stderr)
        return int(Exit.CONFIG)
    setup_logging(settings.get(BackfillSettings).log_format)
    args.interrupt = Interrupt()
    try:
        return run("producer", command.run(settings, args), args.interrupt)
    except BackfillError as exc:
        print(f"producer: {exc}", file=sys.stderr)
        return int(exit_code(exc))


if __name__ == "__main__":
    sys.exit(main())
