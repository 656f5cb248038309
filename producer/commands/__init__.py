"""The producer's commands: for each, the module that holds it and the line `producer --help` shows.

As pip's `commands_dict`: the CLI lists the commands from this table and imports a command's module
only when that command runs (or when the whole parser is built, for completion), so `producer --help`
loads none of them. A module holds one command group and owns its commands' arguments and runs
(`producer.shell.Command`); what the commands share stays in `producer.shell` and `producer.progress`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from producer.shell import Command, LocalCommand


@dataclass(frozen=True)
class CommandInfo:
    module: str  # where the command lives
    entry: str  # its Command (or LocalCommand) in that module
    summary: str  # its line in `producer --help`


COMMANDS: dict[str, CommandInfo] = {  # in the order `producer --help` lists them
    "enqueue": CommandInfo(
        "producer.commands.enqueue", "ENQUEUE", "enqueue one backfill request per candidate row"
    ),
    "verify": CommandInfo(
        "producer.commands.verify",
        "VERIFY",
        "per republished row, whether Discord got its embed (read back from the channel, or from "
        "publisher-discord's metrics table) and which parts the embed shows",
    ),
    "dlq": CommandInfo("producer.commands.dlq", "DLQ", "inspect, replay and purge dead letters"),
    "listen": CommandInfo(
        "producer.commands.evidence",
        "LISTEN",
        "print envelopes as they pass on core NATS (start before publishing)",
    ),
    "snapshot": CommandInfo(
        "producer.commands.evidence", "SNAPSHOT", "id and meta of the candidate rows, as JSON lines"
    ),
    "diff": CommandInfo(
        "producer.commands.evidence",
        "DIFF",
        "per row, meta keys added and changed between two snapshots",
    ),
    "pause": CommandInfo(
        "producer.commands.control",
        "PAUSE",
        "stop every worker from taking new messages, on any nats-server",
    ),
    "resume": CommandInfo("producer.commands.control", "RESUME", "let the workers take messages again"),
    "status": CommandInfo(
        "producer.commands.control",
        "STATUS",
        "backlog, in flight, redeliveries, dead letters, rows enriched/missing, rate, ETA (read-only)",
    ),
    "monitoring": CommandInfo(
        "producer.commands.monitoring",
        "MONITORING",
        "write a merged prometheus.yml, the rule file and a compose override for PMOVES' monitoring",
    ),
    "preview": CommandInfo(
        "producer.commands.enqueue",
        "PREVIEW",
        "print the payloads workers would republish (read-only)",
    ),
    "layout": CommandInfo(
        "producer.commands.layout",
        "LAYOUT",
        "compare the streams and consumer with this environment; --apply changes them",
    ),
    "completion": CommandInfo(
        "producer.commands.completion", "COMPLETION", "print a shell completion script"
    ),
}


def load(name: str) -> Command | LocalCommand:
    """The command called `name`, its module imported now (once)."""
    info = COMMANDS[name]
    command = getattr(importlib.import_module(info.module), info.entry)
    if not isinstance(command, Command | LocalCommand):
        raise TypeError(f"{info.module}.{info.entry} is not a producer command")
    return command
