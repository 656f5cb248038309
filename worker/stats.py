"""Refresh the consumer and dead-letter gauges periodically, so lag shows without an extra exporter."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.pausing import PauseState
from backfill.metrics import Metrics

log = logging.getLogger(__name__)


async def refresh_once(
    js: JetStreamContext, layout: Layout, metrics: Metrics, pause: PauseState | None = None
) -> None:
    info = await js.consumer_info(layout.stream, layout.durable)
    if pause is not None:
        pause.by_server = bool(getattr(info, "paused", False))  # the field came with nats-server 2.11
    metrics.consumer_pending.set(info.num_pending or 0)
    metrics.consumer_ack_pending.set(info.num_ack_pending or 0)
    metrics.consumer_redelivered.set(info.num_redelivered or 0)
    dlq = await js.stream_info(layout.dlq_stream)
    metrics.dlq_depth.set(dlq.state.messages)


async def refresh_forever(
    js: JetStreamContext, layout: Layout, metrics: Metrics, every: float, pause: PauseState | None = None
) -> None:
    while True:
        try:
            await refresh_once(js, layout, metrics, pause)
        except (NatsError, TimeoutError) as exc:
            log.warning("could not refresh consumer stats", extra={"error": str(exc) or type(exc).__name__})
        if pause is None:
            await asyncio.sleep(every)
            continue
        # `producer resume` clears both pauses: the switch changing means look again at once
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pause.switched.wait(), every)
        pause.switched.clear()
