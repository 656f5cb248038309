"""The nats-py shim (`backfill.adapters.jetstream.natspy`): the private state it reads is there, and means
what the shim says, on the nats-py release installed; any other release fails here first."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from backfill.adapters.jetstream import natspy


def test_installed_nats_py_is_one_the_shim_was_checked_against() -> None:
    major, minor = (int(part) for part in version("nats-py").split(".")[:2])
    first, last = natspy.SUPPORTED
    assert first <= (major, minor) <= last, f"nats-py {version('nats-py')}: check natspy.py, then SUPPORTED"


async def test_connection_and_api_prefix_are_the_contexts_own(nc: NatsClient) -> None:
    assert natspy.connection(nc.jetstream()) is nc
    assert natspy.api_prefix(nc.jetstream()) == "$JS.API"
    assert natspy.api_prefix(nc.jetstream(domain="hub")) == "$JS.hub.API"
    # the prefix answers JetStream API requests on that connection
    reply = await natspy.connection(nc.jetstream()).request(f"{natspy.api_prefix(nc.jetstream())}.INFO", b"")
    assert b'"type":"io.nats.jetstream.api.v1.account_info_response"' in reply.data


async def test_take_buffered_returns_what_was_received_and_not_handed_out(nc: NatsClient) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="NATSPY_SHIM", subjects=["natspy.shim.>"]))
    try:
        psub = await js.pull_subscribe("natspy.shim.>", durable="shim", stream="NATSPY_SHIM")
        assert natspy.take_buffered(psub) == []
        for n in range(3):
            await js.publish(f"natspy.shim.{n}", str(n).encode())
        # a pull request whose answers nobody fetches: they wait in the subscription's queue
        inbox = psub._sub.subject  # the shim's own assumption, stated once here
        await nc.publish("$JS.API.CONSUMER.MSG.NEXT.NATSPY_SHIM.shim", b'{"batch": 3}', reply=inbox)
        taken: list[bytes] = []
        for _ in range(100):
            taken += [msg.data for msg in natspy.take_buffered(psub)]
            if len(taken) == 3:
                break
            await asyncio.sleep(0.02)
        assert taken == [b"0", b"1", b"2"]
        assert natspy.take_buffered(psub) == []
        await psub.unsubscribe()
    finally:
        await js.delete_stream("NATSPY_SHIM")
