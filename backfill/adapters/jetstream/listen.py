"""Listening on core NATS: every message handed over as plain values (subject, data, headers as
strings), never as a nats-py `Msg`. Failures to subscribe or unsubscribe are BusError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from backfill.adapters.jetstream.bus import failure

Handler = Callable[[str, bytes, dict[str, str]], None]  # (subject, data, headers)


def text_headers(headers: Mapping[Any, Any] | None) -> dict[str, str]:
    """Headers as plain strings: nats-py hands a non-ASCII value over as an `email.header.Header`."""
    return {str(key): str(value) for key, value in (headers or {}).items()}


class Subscriptions:
    """What `subscribe` started; `stop` ends it."""

    def __init__(self, subscriptions: list[Subscription]) -> None:
        self._subscriptions = subscriptions

    async def stop(self) -> None:
        try:
            for subscription in self._subscriptions:
                await subscription.unsubscribe()
        except (NatsError, TimeoutError) as exc:
            raise failure("cannot unsubscribe", exc) from exc


async def subscribe(nc: NatsClient, subjects: Iterable[str], handler: Handler) -> Subscriptions:
    """Hand every message on `subjects` to `handler`. Returns once the server has registered every
    subscription: what is published after that is heard."""

    async def deliver(msg: Msg) -> None:  # nats-py takes only coroutine callbacks
        handler(msg.subject, msg.data, text_headers(msg.headers))

    try:
        subscriptions = [await nc.subscribe(subject, cb=deliver) for subject in subjects]
        await nc.flush()
    except (NatsError, TimeoutError) as exc:
        raise failure("cannot subscribe", exc) from exc
    return Subscriptions(subscriptions)
