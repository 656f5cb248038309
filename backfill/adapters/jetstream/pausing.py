"""A pause every worker honours, on every nats-server: one key in a JetStream key-value bucket.

JetStream can pause a consumer only from nats-server 2.11 on; PMOVES runs 2.10 (docs/upstreams.md §8).
So `producer pause` also writes `paused.<stream>.<consumer>` into the control bucket, and every worker
reads it every second: while it is there, a worker fetches nothing new, finishes (and keeps alive) what
it holds, and reports `backfill_paused 1`. `producer resume` deletes the key. The bucket keeps no
history and no expiry: a pause lasts until someone resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from backfill.adapters.jetstream.bus import key_value_bucket
from backfill.adapters.jetstream.layout import Layout
from backfill.core.errors import BusError

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


class Paused(msgspec.Struct, frozen=True):
    since: float  # wall-clock seconds
    by: str  # who paused (the producer's client name and host), for `status`


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Paused)


def pause_key(layout: Layout) -> str:
    return f"paused.{layout.stream}.{layout.durable}"


class PauseSwitch:
    def __init__(self, kv: KeyValue, layout: Layout) -> None:
        self._kv = kv
        self._key = pause_key(layout)

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, layout: Layout, replicas: int = 1) -> PauseSwitch:
        """Open (or create) the control bucket."""
        return cls(
            await key_value_bucket(js, bucket, "control", "backfill: worker pause switch", replicas=replicas),
            layout,
        )

    @classmethod
    async def existing(cls, js: JetStreamContext, bucket: str, layout: Layout) -> PauseSwitch | None:
        """The control bucket when it exists (None: nobody ever paused, nothing to read)."""
        try:
            return cls(await js.key_value(bucket), layout)
        except NotFoundError:
            return None
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"cannot read the control bucket {bucket}: {exc}") from exc

    async def pause(self, by: str) -> None:
        try:
            await self._kv.put(self._key, _encoder.encode(Paused(since=time.time(), by=by)))
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"cannot write the pause switch: {exc}") from exc

    async def resume(self) -> None:
        try:
            await self._kv.delete(self._key)
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"cannot clear the pause switch: {exc}") from exc

    async def state(self) -> Paused | None:
        """The pause in force, or None. A value nobody can read still means paused (fail safe)."""
        try:
            entry = await self._kv.get(self._key)
        except KeyNotFoundError:  # never set, or deleted by resume
            return None
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"cannot read the pause switch: {exc}") from exc
        try:
            return _decoder.decode(entry.value or b"")
        except msgspec.DecodeError:
            log.warning("pause switch unreadable; treating it as paused", extra={"key": self._key})
            return Paused(since=0.0, by="unreadable value")


class PauseState:
    """What a worker knows: paused by the switch, and (on 2.11+) paused by the server."""

    def __init__(self) -> None:
        self.by_switch = False
        self.by_server = False
        self._running = asyncio.Event()
        self._running.set()
        self.switched = asyncio.Event()  # set on every switch change: the server's view is worth a fresh look

    @property
    def paused(self) -> bool:
        return self.by_switch or self.by_server

    def set_switch(self, paused: bool) -> None:
        if paused != self.by_switch:
            log.info("paused by producer pause" if paused else "resumed")
            self.switched.set()
        self.by_switch = paused
        if paused:
            self._running.clear()
        else:
            self._running.set()

    async def wait_running(self, stop: asyncio.Event) -> None:
        """Until the switch is off, or until stop."""
        waiters = [asyncio.ensure_future(self._running.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the caller is cancelled meanwhile
            for waiter in waiters:
                waiter.cancel()


async def watch_switch(switch: PauseSwitch, state: PauseState, every: float = POLL_SECONDS) -> None:
    """Poll the switch for the life of the worker. A read that fails keeps the last known state."""
    while True:
        try:
            state.set_switch(await switch.state() is not None)
        except BusError as exc:
            log.warning("pause switch not read; keeping the last state", extra={"error": str(exc)})
        await asyncio.sleep(every)
