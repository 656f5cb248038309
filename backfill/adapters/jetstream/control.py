"""The durable consumer as `producer pause | resume | status` see it: its backlog, the server's own pause
(nats-server 2.11+), and how the streams are stored.

JetStream's refusals become NotFound (the stream or the consumer is missing) or BusError, worded for the
command that asked (`pause_refused`); no answer in time is a BusError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from nats.aio.client import ServerVersion
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import APIError

from backfill.adapters.jetstream.bus import Bus, api_failure
from backfill.adapters.jetstream.layout import Layout
from backfill.adapters.jetstream.work import ConsumerState, state_of
from backfill.core.errors import BusError, NotFound

PAUSE_YEARS = 100  # "until resumed": JetStream pauses until a timestamp
PAUSE_SINCE = (2, 11)  # consumer pause came with nats-server 2.11; 2.10 leaves the request unanswered
CONSUMER_NOT_FOUND = 10014  # JetStream API error codes
STREAM_NOT_FOUND = 10059


def consumer_pause_supported(server: ServerVersion) -> bool:
    """Whether the server can pause a consumer itself (2.11+; unknown versions are asked). Older ones
    leave the request unanswered: there, the pause switch alone does it."""
    return server.major == 0 or (server.major, server.minor) >= PAUSE_SINCE


def server_pauses_consumers(bus: Bus) -> bool:
    """`consumer_pause_supported` for the nats-server `bus` is connected to."""
    return consumer_pause_supported(bus.nc.connected_server_version)


def pause_refused(command: str, layout: Layout, exc: APIError) -> str:
    """What JetStream's refusal of a pause, resume or status means, in the operator's terms."""
    code = f"JetStream error {exc.err_code}: {exc.description}"
    if exc.err_code == CONSUMER_NOT_FOUND:
        missing = f"consumer {layout.durable!r} not found on stream {layout.stream!r}"
    elif exc.err_code == STREAM_NOT_FOUND:
        missing = f"stream {layout.stream!r} not found"
    else:
        return f"{command} failed: {code}."
    return (
        f"{command} failed: {missing} ({code}). Check BACKFILL_STREAM and BACKFILL_CONSUMER: "
        "they must name the stream and consumer the workers use."
    )


class ConsumerControl:
    """The work stream's durable consumer, for one command: its refusals are worded for that command."""

    def __init__(self, js: JetStreamContext, layout: Layout, command: str) -> None:
        self._js = js
        self._layout = layout
        self._command = command

    @contextlib.contextmanager
    def _answered(self) -> Iterator[None]:
        try:
            yield
        except APIError as exc:
            missing = exc.err_code in (CONSUMER_NOT_FOUND, STREAM_NOT_FOUND)
            error = NotFound if missing else BusError
            raise error(pause_refused(self._command, self._layout, exc)) from exc
        except (NatsError, TimeoutError) as exc:
            raise api_failure(exc) from exc

    async def backlog(self) -> ConsumerState:
        """The consumer's counts now; NotFound when it or its stream is missing."""
        with self._answered():
            info = await self._js.consumer_info(self._layout.stream, self._layout.durable)
        return state_of(info)

    async def require(self) -> None:
        """NotFound unless the consumer and its stream exist."""
        await self.backlog()

    async def pause(self) -> None:
        """Pause the consumer on the server (2.11+) until resumed."""
        until = (datetime.now(UTC) + timedelta(days=365 * PAUSE_YEARS)).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._answered():
            await self._js.pause_consumer(self._layout.stream, self._layout.durable, until)

    async def resume(self) -> None:
        with self._answered():
            await self._js.resume_consumer(self._layout.stream, self._layout.durable)


async def memory_streams(js: JetStreamContext, layout: Layout) -> list[str]:
    """The work and dead-letter streams that JetStream keeps in memory, by name."""
    names = []
    for name in (layout.stream, layout.dlq_stream):
        try:
            info = await js.stream_info(name)
        except (NatsError, TimeoutError) as exc:
            raise api_failure(exc) from exc
        if info.config.storage == StorageType.MEMORY:
            names.append(name)
    return names
