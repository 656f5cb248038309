"""`producer completion bash|zsh`: the shell completion script, drawn from the program's whole parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from backfill.core.errors import Exit
from producer.shell import LocalCommand, completion


def completion_arguments(shells: argparse.ArgumentParser) -> None:
    shells.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")


def print_completion(args: argparse.Namespace, program: Callable[[], argparse.ArgumentParser]) -> int:
    print(completion("producer", program(), args.shell), end="")
    return int(Exit.OK)


COMPLETION = LocalCommand(
    completion_arguments,
    print_completion,
    {"completion": 'source <(producer completion bash)\nproducer completion zsh > "${fpath[1]}/_producer"'},
)
