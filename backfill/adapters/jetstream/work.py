"""The work queue as the worker sees it: deliveries pulled from the durable consumer, the actions that
settle them, dead letters published with their acknowledgement awaited, and the consumer's state for
the gauges.

Every nats-py failure becomes a `BusError` here, and every nats-py type stays here: the worker handles
`Delivery` and `ConsumerState`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from backfill.adapters.jetstream import natspy
from backfill.adapters.jetstream.bus import AckPublisher, PubStatus, failure
from backfill.core.deadletter import Failure, dead_letter_headers
from backfill.core.errors import BusError
from backfill.core.wire import dlq_subject

log = logging.getLogger(__name__)


class Delivery:
    """One delivery of a work message to this worker. Settling it twice, or on a lost connection, raises
    `BusError`: JetStream then redelivers it after the ack wait; nothing is lost."""

    __slots__ = ("_msg",)

    def __init__(self, msg: Msg) -> None:
        self._msg = msg

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def headers(self) -> dict[str, str] | None:
        return self._msg.headers

    @property
    def seq(self) -> int:
        """The message's sequence in the work stream: the same on every delivery."""
        return int(self._msg.metadata.sequence.stream)

    @property
    def attempt(self) -> int:
        """Which delivery this is (1 on the first)."""
        return int(self._msg.metadata.num_delivered)

    async def ack(self) -> None:
        await self._act(self._msg.ack(), "ack")

    async def nak(self, delay: float | None = None) -> None:
        await self._act(self._msg.nak(delay=delay), "nak")

    async def term(self) -> None:
        await self._act(self._msg.term(), "term")

    async def in_progress(self) -> None:
        await self._act(self._msg.in_progress(), "in progress")

    async def _act(self, action: Awaitable[None], what: str) -> None:
        try:
            await action
        except NatsError as exc:
            raise failure(what, exc) from exc


class WorkQueue:
    """The worker's pull subscription on the durable consumer."""

    def __init__(self, psub: Any) -> None:
        self._psub = psub

    @classmethod
    async def bind(cls, js: JetStreamContext, stream: str, durable: str) -> WorkQueue:
        """Bind to the existing durable consumer (the layout is set up before)."""
        try:
            return cls(await js.pull_subscribe_bind(durable, stream=stream))
        except (NatsError, TimeoutError) as exc:
            raise failure(f"cannot bind to consumer {durable} of {stream}", exc) from exc

    async def fetch(self, batch: int, wait: float) -> list[Delivery]:
        """Up to `batch` deliveries; none when nothing came within `wait` seconds. A lost connection raises
        `BusError` (the client reconnects on its own)."""
        try:
            msgs: list[Msg] = await self._psub.fetch(batch, timeout=wait)
        except (NatsTimeoutError, TimeoutError):  # nats-py raises both kinds for an empty fetch
            return []
        except NatsError as exc:
            raise BusError(str(exc) or type(exc).__name__) from exc
        return [Delivery(msg) for msg in msgs]

    async def close(self) -> None:
        """Hand back at once what the client received but never handed out (it would otherwise wait
        out the ack wait), then unsubscribe."""
        for msg in natspy.take_buffered(self._psub):
            if msg.headers and msg.headers.get("Status"):
                continue  # status messages (408/404) carry no work
            with contextlib.suppress(NatsError):
                await msg.nak()
        with contextlib.suppress(NatsError):
            await self._psub.unsubscribe()


@dataclass(frozen=True)
class ConsumerState:
    delivered_seq: int  # the highest stream sequence delivered so far
    pending: int
    ack_pending: int
    redelivered: int
    max_deliver: int
    paused: bool  # paused on the server (nats-server 2.11+; always False before)


async def consumer_state(js: JetStreamContext, stream: str, durable: str) -> ConsumerState:
    try:
        info = await js.consumer_info(stream, durable)
    except (NatsError, TimeoutError) as exc:
        raise failure(f"consumer {durable} of {stream}", exc) from exc
    return state_of(info)


def state_of(info: ConsumerInfo) -> ConsumerState:
    """The counts of a consumer_info answer (read by the worker here, by `producer status` in control)."""
    return ConsumerState(
        delivered_seq=info.delivered.stream_seq or 0 if info.delivered else 0,
        pending=info.num_pending or 0,
        ack_pending=info.num_ack_pending or 0,
        redelivered=info.num_redelivered or 0,
        max_deliver=info.config.max_deliver or 0,
        paused=bool(getattr(info, "paused", False)),  # the field came with nats-server 2.11
    )


async def stream_depth(js: JetStreamContext, stream: str) -> int:
    """How many messages `stream` holds."""
    try:
        info = await js.stream_info(stream)
    except (NatsError, TimeoutError) as exc:
        raise failure(f"stream {stream}", exc) from exc
    return int(info.state.messages)


async def publish_dead_letter(
    publisher: AckPublisher, prefix: str, failure: Failure, data: bytes, original: dict[str, str] | None
) -> tuple[bool, dict[str, str]]:
    """Copy a message to `<prefix>.dlq.<reason>` and await the ack: (stored, the headers it carries).

    Both the settle step and the sweeper go through here; stored also covers a duplicate (same stream
    sequence already dead-lettered), so the caller may remove the original either way.
    """
    headers = dead_letter_headers(failure, original)
    result = await publisher.publish(dlq_subject(prefix, failure.reason), data, headers)
    if result.status not in (PubStatus.STORED, PubStatus.DUPLICATE):
        log.error(
            "dead-letter publish failed; original kept",
            extra={"seq": failure.stream_seq, "error": result.error},
        )
        return False, headers
    return True, headers
