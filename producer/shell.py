"""What every `producer` command shares with the tools operators know: exit codes, signals, output;
and what a command is (`Command`, `LocalCommand`), as `producer.commands` registers it.

- One JSON document on stdout with `--json` (nothing else on stdout); text otherwise; errors, warnings
  and progress on stderr.
- Exit codes (`Exit`): 0 done, 1 done but something failed (or differs), 2 usage or configuration,
  3 NATS, JetStream or an upstream refused or was out of reach, 4 what the command reads does not
  exist, 130 interrupted (SIGINT), 143 terminated (SIGTERM).
- SIGINT and SIGTERM: a command that can stop well (`enqueue`, `dlq replay`) is asked to stop and ends
  with its summary; any other is cancelled at once. A second signal always cancels. No traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backfill.core.errors import Exit

if TYPE_CHECKING:
    from backfill.settings import SettingsBundle


def no_usage_error(_args: argparse.Namespace) -> str | None:
    return None


def needs(*groups: type[Any]) -> Callable[[argparse.Namespace], list[type[Any]]]:
    """A command's settings groups, when they do not depend on its options."""
    return lambda _args: list(groups)


@dataclass(frozen=True)
class Command:
    """A command as its module in `producer.commands` defines it: its arguments (on the subparser the
    CLI made, which carries the registry's summary), the settings groups it loads, its run (in the
    event loop, with SIGINT/SIGTERM handled by `run`), and the examples under its --help, by full
    name ("dlq list"). `check` runs after parsing: it fills what depends on other options and returns
    the usage error argparse cannot see, if any."""

    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[SettingsBundle, argparse.Namespace], Coroutine[Any, Any, int]]
    settings: Callable[[argparse.Namespace], list[type[Any]]]
    examples: Mapping[str, str]
    check: Callable[[argparse.Namespace], str | None] = no_usage_error


@dataclass(frozen=True)
class LocalCommand:
    """A command that needs no settings and no network (`monitoring` writes files, `completion` prints a
    script): `run` gets its arguments and a way to build the program's whole parser."""

    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Callable[[], argparse.ArgumentParser]], int]
    examples: Mapping[str, str]


class Interrupt:
    """The first SIGINT/SIGTERM, for a command that stops well; None until one arrives."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.graceful = False  # set by a command that checks `requested` and ends with a summary

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def signal_name(self) -> str | None:
        return self.signal.name if self.signal is not None else None

    def set(self, sig: signal.Signals) -> None:
        self.signal = self.signal or sig

    @property
    def exit_code(self) -> int:
        return int(Exit.TERMINATED if self.signal == signal.SIGTERM else Exit.INTERRUPTED)


def run(program: str, work: Coroutine[Any, Any, int], interrupt: Interrupt) -> int:
    """Run `work` with SIGINT/SIGTERM handled as the module says; its exit code, or 130/143."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(sig: signal.Signals) -> None:
            if interrupt.graceful and not interrupt.requested:
                print(
                    f"{program}: {sig.name}: finishing what is in flight (again to stop at once)",
                    file=sys.stderr,
                )
                interrupt.set(sig)
                return
            interrupt.set(sig)
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await work
        except asyncio.CancelledError:
            if not interrupt.requested:
                raise
            print(
                f"{program}: stopped by {interrupt.signal.name if interrupt.signal else 'a signal'}",
                file=sys.stderr,
            )
            return interrupt.exit_code
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:  # between the handlers: before the loop ran, or after it closed
        print(f"{program}: interrupted", file=sys.stderr)
        return int(Exit.INTERRUPTED)


def guard_stdout(program: str, entry: Any, argv: list[str] | None) -> int:
    """`entry(argv)`, with Ctrl-C outside the event loop and a closed pipe (`... | head`) ending quietly."""
    try:
        code: int = entry(argv)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:  # the reader went away: nothing more to say, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def id_list(text: str) -> list[int]:
    """`--ids 1,2,3`: positive row ids."""
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--ids takes comma-separated integers, got {text!r}") from exc
    if not ids or any(i <= 0 for i in ids):
        raise argparse.ArgumentTypeError("--ids takes positive row ids")
    return ids


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    """The command's report: one JSON document with --json, else the text."""
    print(json.dumps(data, ensure_ascii=False) if getattr(args, "json", False) else text)


def warn(program: str, message: str) -> None:
    print(f"{program}: warning: {message}", file=sys.stderr)


def add_json(parser: argparse.ArgumentParser, what: str = "the report") -> None:
    parser.add_argument(
        "--json", action="store_true", help=f"print {what} as one JSON document on stdout (nothing else)"
    )


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand parser below `parser`, by its full name ("dlq replay")."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in subparsers(sub).items()})
    return found


def options(parser: argparse.ArgumentParser) -> list[str]:
    """The option strings one parser takes (for completion)."""
    return sorted(
        s for action in parser._actions for s in action.option_strings if s.startswith("--") or s == "-h"
    )


def with_examples(parser: argparse.ArgumentParser, examples: dict[str, str]) -> None:
    """Put each command's examples under its --help (and the program's under the program's)."""
    for name, sub in {"": parser, **subparsers(parser)}.items():
        if name in examples:
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
            sub.epilog = "examples:\n" + "\n".join(
                f"  {line}" for line in examples[name].strip().splitlines()
            )


def _choices(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    return {
        option: [str(c) for c in action.choices]
        for action in parser._actions
        if action.choices and not isinstance(action, argparse._SubParsersAction)
        for option in action.option_strings
    }


def completion(program: str, parser: argparse.ArgumentParser, shell: str) -> str:
    """A bash completion script for `program`: subcommands, their options, and the values of options
    with choices (zsh loads the same script through bashcompinit)."""
    subs = {"": parser, **subparsers(parser)}
    known = "|" + "|".join(sorted(k for k in subs if k)) + "|"
    cases, values = [], []
    for name, sub in sorted(subs.items()):
        nested = sorted(k.rsplit(" ", 1)[-1] for k in subparsers(sub) if " " not in k)
        cases.append(f'        "{name}") words="{" ".join(nested + options(sub))}" ;;')
        values += [f'        "{name}|{opt}") words="{" ".join(c)}" ;;' for opt, c in _choices(sub).items()]
    fn = f"_{program}_complete"
    script = f"""# {program} completion for {shell}; load it with:  source <({program} completion {shell})
{fn}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" key="" words="" i next
    local known="{known}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        next="${{key:+$key }}${{COMP_WORDS[i]}}"
        [[ $known == *"|$next|"* ]] && key="$next"
    done
    case "$key|$prev" in
{chr(10).join(values)}
        *)
            case "$key" in
{chr(10).join("    " + c for c in cases)}
            esac ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F {fn} {program}
"""
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script
