"""The producer's command registry (`producer.commands`): every command is where the table says, and
a command's module is imported only when that command is parsed or run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from producer.cli import build_parser, named_command
from producer.commands import COMMANDS, load
from producer.shell import Command, LocalCommand

REPO = Path(__file__).resolve().parents[2]
LOADED = """
import json, sys
from producer.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith("producer.commands."))))
"""


def command_modules_loaded(*argv: str) -> list[str]:
    """The modules of `producer.commands` a fresh interpreter has imported after `producer <argv>`."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED, *argv], capture_output=True, text=True, check=True, cwd=REPO
    )
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_registered_command_is_a_command_of_its_module(name: str) -> None:
    """The table's module and entry name a Command, whose examples cover the command."""
    command = load(name)
    assert isinstance(command, Command | LocalCommand)
    assert name in command.examples  # its --help shows examples


def test_every_command_module_is_in_the_registry() -> None:
    """A module under producer/commands that the table does not name would never be reachable."""
    modules = {
        f"producer.commands.{path.stem}"
        for path in (REPO / "producer" / "commands").glob("*.py")
        if path.stem != "__init__"
    }
    assert modules == {info.module for info in COMMANDS.values()}


def test_the_parser_lists_every_command_in_the_registry_order() -> None:
    """Even when no command's module is loaded, `producer --help` lists them all, in the table's order."""
    subparsers = next(a for a in build_parser([])._actions if a.dest == "command")
    assert list(subparsers.choices) == list(COMMANDS)


def test_help_imports_no_command_module() -> None:
    """`producer --help` reads the table only: no command's module, none of what they import."""
    assert command_modules_loaded("--help") == []


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["enqueue", "--help"], "producer.commands.enqueue"),
        (["dlq", "list", "--help"], "producer.commands.dlq"),
        (["diff", "--help"], "producer.commands.evidence"),
    ],
)
def test_a_command_imports_its_own_module_only(argv: list[str], module: str) -> None:
    """Parsing a command imports the module that holds it, and no other command's."""
    assert command_modules_loaded(*argv) == [module]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["enqueue", "--all-missing"], ["enqueue"]),
        (["dlq", "list", "--json"], ["dlq"]),
        (["--help"], []),
        (["--version"], []),
        (["bogus"], []),
        ([], []),
    ],
)
def test_the_command_to_load_is_the_first_word_that_is_not_an_option(
    argv: list[str], named: list[str]
) -> None:
    """Only `--help` and `--version` precede a command, and neither takes a value."""
    assert named_command(argv) == named
