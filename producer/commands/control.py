"""`producer pause | resume | status`: run control for every worker at once, and where the run stands
(`producer.status`)."""

from __future__ import annotations

import argparse
import socket
from dataclasses import asdict
from typing import Any

from backfill.adapters.jetstream.bus import JetStream
from backfill.adapters.jetstream.control import ConsumerControl, server_pauses_consumers
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.pausing import PauseSwitch
from backfill.core.errors import NotFound, UpstreamError
from backfill.core.ports import RunMetrics
from backfill.settings import BackfillSettings, NatsSettings, SettingsBundle
from backfill.wiring import build_pushgateway, connect_bus, layout_from
from producer.shell import Command, add_json, emit, needs, warn
from producer.status import count_rows, measure, render, storage_warnings

PUSHGATEWAY_HELP = (
    "also push backfill_paused to this Prometheus Pushgateway, so the alerts see the pause with no "
    "worker up (default: BACKFILL_PUSHGATEWAY_URL)"
)


def pause_arguments(pause: argparse.ArgumentParser) -> None:
    """`pause` and `resume` take the same options."""
    pause.add_argument("--pushgateway", metavar="URL", help=PUSHGATEWAY_HELP)
    add_json(pause, "what was done")


def status_arguments(status: argparse.ArgumentParser) -> None:
    add_json(status, "the status")
    status.add_argument(
        "--sample", type=float, default=2.0, help="seconds to measure the current rate over (0: no rate)"
    )


async def run_control(settings: SettingsBundle, args: argparse.Namespace) -> int:
    layout = layout_from(settings)
    nats_cfg = settings.get(NatsSettings)
    bus = await connect_bus(settings, f"backfill-producer {args.command}")
    try:  # reads and pauses only: the layout is set up by enqueue and workers
        if args.command == "status":
            return await _status(settings, bus.js, layout, args)
        switch = await PauseSwitch.open(bus.js, nats_cfg.control_bucket, layout, replicas=nats_cfg.replicas)
        server_pauses = server_pauses_consumers(bus)
        code = await pause_or_resume(bus.js, layout, switch, args, server_pauses=server_pauses)
    finally:
        await bus.drain()
    pushgateway = build_pushgateway(settings, args.pushgateway)
    if code == 0 and pushgateway is not None:
        await push_paused_or_warn(pushgateway, args.command == "pause")
    return code


async def pause_or_resume(
    js: JetStream,
    layout: Layout,
    switch: PauseSwitch,
    args: argparse.Namespace,
    *,
    server_pauses: bool,
) -> int:
    """Pause: the switch every worker honours, then (2.11+) the consumer itself; resume: both back.
    A missing stream or consumer is NotFound, and nothing is changed."""
    command = args.command
    consumer = ConsumerControl(js, layout, command)
    await consumer.require()
    if command == "pause":
        await switch.pause(by=f"producer on {socket.gethostname()}")
        if server_pauses:
            await consumer.pause()
    else:
        if server_pauses:
            await consumer.resume()
        await switch.resume()
    if command == "resume":
        text = f"{layout.durable} resumed"
    elif server_pauses:
        text = f"{layout.durable} paused: workers receive nothing until resume"
    else:
        text = (
            f"{layout.durable} paused: workers fetch nothing new until resume (this nats-server cannot "
            "pause a consumer itself; every worker reads the pause switch within a second)"
        )
    data = {
        "consumer": layout.durable,
        "stream": layout.stream,
        "paused": command == "pause",
        "switch": True,
        "server_pause": server_pauses,
    }
    emit(args, data, text)
    return 0


async def push_paused_or_warn(pushgateway: RunMetrics, paused: bool) -> None:
    """`backfill_paused` on the Pushgateway keeps a deliberate pause visible with no worker running
    (the alerts read it). The pause itself is done: a failed push only warns."""
    try:
        await pushgateway.push_paused(paused)
    except UpstreamError as exc:
        warn("producer", f"the pause state was not pushed to the Pushgateway: {exc}")


async def _status(settings: SettingsBundle, js: JetStream, layout: Layout, args: argparse.Namespace) -> int:
    try:
        status = await measure(js, layout, args.sample)
    except NotFound as exc:
        hint = "Nothing was enqueued yet, or this shell's settings name another layout."
        raise NotFound(f"{exc} {hint}") from exc
    switch = await PauseSwitch.existing(js, settings.get(NatsSettings).control_bucket, layout)
    status.paused = status.paused or (switch is not None and await switch.state() is not None)
    status.warnings.extend(await storage_warnings(js, layout))
    await count_rows(settings, status)
    for warning in status.warnings:
        warn("producer", warning)
    data: dict[str, Any] = asdict(status)
    emit(args, data, render(status))
    return 0


SETTINGS = needs(NatsSettings, BackfillSettings)  # status: the catalog is optional (see count_rows)
PAUSE = Command(
    pause_arguments,
    run_control,
    SETTINGS,
    {"pause": "producer pause\nproducer pause --pushgateway http://backfill-pushgateway:9091 --json"},
)
RESUME = Command(pause_arguments, run_control, SETTINGS, {"resume": "producer resume"})
STATUS = Command(
    status_arguments,
    run_control,
    SETTINGS,
    {"status": "producer status\nproducer status --json --sample 0 | jq .backlog"},
)
