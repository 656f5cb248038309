"""Refresh the consumer and dead-letter gauges periodically, so lag shows without an extra exporter."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from backfill.adapters.jetstream.bus import Bus
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.pausing import PauseState
from backfill.adapters.jetstream.work import consumer_state, stream_depth
from backfill.core.errors import BusError
from backfill.metrics import Metrics

log = logging.getLogger(__name__)


async def refresh_once(bus: Bus, layout: Layout, metrics: Metrics, pause: PauseState | None = None) -> None:
    state = await consumer_state(bus.js, layout.stream, layout.durable)
    if pause is not None:
        pause.by_server = state.paused
    metrics.consumer_pending.set(state.pending)
    metrics.consumer_ack_pending.set(state.ack_pending)
    metrics.consumer_redelivered.set(state.redelivered)
    metrics.dlq_depth.set(await stream_depth(bus.js, layout.dlq_stream))


async def refresh_forever(
    bus: Bus, layout: Layout, metrics: Metrics, every: float, pause: PauseState | None = None
) -> None:
    while True:
        try:
            await refresh_once(bus, layout, metrics, pause)
        except BusError as exc:
            log.warning("could not refresh consumer stats", extra={"error": str(exc)})
        if pause is None:
            await asyncio.sleep(every)
            continue
        # `producer resume` clears both pauses: the switch changing means look again at once
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pause.switched.wait(), every)
        pause.switched.clear()
