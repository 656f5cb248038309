"""`producer layout`: how the server's streams and consumer differ from this environment; `--apply`
makes them so (the only command that changes an existing stream or consumer)."""

from __future__ import annotations

import argparse

from backfill.adapters.jetstream.layout import apply_changes, plan_layout
from backfill.core.errors import Exit, StreamConfigConflict
from backfill.settings import BackfillSettings, NatsSettings, SettingsBundle
from backfill.wiring import connect_bus, layout_from
from producer.shell import Command, add_json, emit, needs


def layout_arguments(apply: argparse.ArgumentParser) -> None:
    apply.add_argument("--apply", action="store_true", help="after showing the differences, make them")
    add_json(apply, "the differences")


async def run_layout(settings: SettingsBundle, args: argparse.Namespace) -> int:
    """The differences between the server and this environment's layout; with --apply, made."""
    layout = layout_from(settings)
    bus = await connect_bus(settings, "backfill-producer layout")
    try:
        plan = await plan_layout(bus.js, layout)
        if plan.conflicts:
            raise StreamConfigConflict(" ".join(plan.conflicts))
        if args.apply:
            await apply_changes(bus.js, layout, plan.changes)
    finally:
        await bus.drain()
    verb = "applied" if args.apply else "differs"
    lines = [change.render() for change in plan.changes] or ["the layout matches this environment"]
    if plan.changes:
        lines.append(
            f"{len(plan.changes)} {verb}" + ("" if args.apply else ": `producer layout --apply` makes it so")
        )
    data = {"applied": bool(args.apply and plan.changes), "changes": [c.as_dict() for c in plan.changes]}
    emit(args, data, "\n".join(lines))
    return int(Exit.FAILED if plan.changes and not args.apply else Exit.OK)


LAYOUT = Command(
    layout_arguments,
    run_layout,
    needs(NatsSettings, BackfillSettings),
    {
        "layout": "producer layout            # what differs from this environment (exit 1 when anything "
        "does)\nproducer layout --apply    # show the differences, then make them"
    },
)
