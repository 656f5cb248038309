"""Every use of nats-py's private state, in one module, checked against the versions it supports.

nats-py has no public API for three things the backfill needs:
- the connection and the API prefix of a `JetStreamContext`, for the raw JetStream API requests nats-py
  does not offer (delete without secure erase; `no_wait` pull batches collected on our own inbox);
- the messages a pull subscription has received but not yet handed out, nak'd at shutdown so another
  replica takes them at once instead of after `ack_wait`.

`SUPPORTED` names the nats-py releases this was read against; tests/integration/test_natspy.py fails on
any other release, and checks each function against a real nats-server.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

SUPPORTED = ((2, 9), (2, 16))  # first and last (major, minor) release checked, inclusive


def connection(js: JetStreamContext) -> NatsClient:
    """The connection a JetStream context sends its API requests on."""
    nc: NatsClient = js._nc
    return nc


def api_prefix(js: JetStreamContext) -> str:
    """The JetStream API subject prefix of a context (`$JS.API`, or its domain's)."""
    prefix: str = js._prefix
    return prefix


def take_buffered(psub: Any) -> list[Msg]:
    """Remove and return what a pull subscription received but never handed out (none when nats-py
    keeps them elsewhere: the caller then loses only the early redelivery, not the messages)."""
    queue = getattr(getattr(psub, "_sub", None), "_pending_queue", None)
    taken: list[Msg] = []
    while queue is not None and not queue.empty():
        taken.append(queue.get_nowait())
    return taken
