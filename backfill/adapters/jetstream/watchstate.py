"""What `producer watch` keeps in JetStream key-value buckets: its cursor and last pass (durable), and the
lease that lets one watcher at a time work (`backfill.core.watch` defines the records).

**The lease works on nats-server 2.10** (PMOVES' release), which has no per-key TTL (2.11+): it lives in
a bucket of its own whose `max_age` is the lease's TTL, so the server itself forgets a lease its holder
stopped renewing, on the server's one clock. Taking it is a `create` (refused while a live lease is
there); renewing is an `update` on the revision the holder last wrote, so a holder that was too slow and
lost it learns so at its next renewal instead of overwriting its successor. Two watchers at once would
only cost work: every enqueue is idempotent (one pending message per row).

Keys carry the work stream's name (`cursor.<stream>`, `pass.<stream>`, `lease.<stream>`), so layouts
sharing a server keep separate state. Every failure is a BusError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from backfill.adapters.jetstream.bus import key_value_bucket
from backfill.adapters.jetstream.layout import Layout
from backfill.core.errors import BusError
from backfill.core.watch import LeaseRecord, PassRecord, WatchCursor

S = TypeVar("S", bound=msgspec.Struct)
_encoder = msgspec.json.Encoder()
STATE_DESCRIPTION = "backfill: producer watch's cursor and last pass"
LEASE_DESCRIPTION = "backfill: the producer watch lease (max_age is its TTL)"


async def _get(kv: KeyValue, key: str, kind: type[S]) -> S | None:
    """The value under `key` decoded as `kind`; None when absent or unreadable."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    except (NatsError, TimeoutError) as exc:
        raise BusError(f"cannot read {key}: {exc}") from exc
    try:
        return msgspec.json.decode(entry.value or b"", type=kind)
    except msgspec.DecodeError:
        return None


class WatchState:
    """The cursor and the last pass of the watcher of one layout."""

    def __init__(self, kv: KeyValue, layout: Layout) -> None:
        self._kv = kv
        self._cursor_key = f"cursor.{layout.stream}"
        self._pass_key = f"pass.{layout.stream}"

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str, layout: Layout, replicas: int = 1) -> WatchState:
        kv = await key_value_bucket(js, bucket, "watch state", STATE_DESCRIPTION, replicas=replicas)
        return cls(kv, layout)

    @classmethod
    async def existing(cls, js: JetStreamContext, bucket: str, layout: Layout) -> WatchState | None:
        """The bucket when a watcher ever ran (None: nothing to read)."""
        kv = await _existing(js, bucket)
        return None if kv is None else cls(kv, layout)

    async def cursor(self) -> WatchCursor:
        return await _get(self._kv, self._cursor_key, WatchCursor) or WatchCursor()

    async def save_cursor(self, cursor: WatchCursor) -> None:
        await self._put(self._cursor_key, _encoder.encode(cursor))

    async def last_pass(self) -> PassRecord | None:
        return await _get(self._kv, self._pass_key, PassRecord)

    async def save_pass(self, record: PassRecord) -> None:
        await self._put(self._pass_key, _encoder.encode(record))

    async def _put(self, key: str, value: bytes) -> None:
        try:
            await self._kv.put(key, value)
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"cannot write {key}: {exc}") from exc


async def _existing(js: JetStreamContext, bucket: str) -> KeyValue | None:
    try:
        return await js.key_value(bucket)
    except NotFoundError:
        return None
    except (NatsError, TimeoutError) as exc:
        raise BusError(f"cannot open the bucket {bucket}: {exc}") from exc


class Lease:
    """The one-watcher lease of a layout, held by `holder` once `acquire` returned True."""

    def __init__(
        self, kv: KeyValue, layout: Layout, ttl: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._kv = kv
        self._key = f"lease.{layout.stream}"
        self.ttl = ttl  # the bucket's max_age: the TTL in force, whatever this process was told
        self._clock = clock
        self._revision: int | None = None
        self._since = 0.0

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, layout: Layout, ttl: float, replicas: int = 1
    ) -> Lease:
        """The lease bucket, created with `ttl` as its max_age when missing; an existing bucket keeps
        its own (the server refuses to open a bucket under another configuration)."""
        kv = await _existing(js, bucket)
        if kv is None:
            kv = await key_value_bucket(
                js, bucket, "watch lease", LEASE_DESCRIPTION, replicas=replicas, ttl=ttl
            )
        try:
            in_force = (await kv.status()).ttl
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"cannot read the bucket {bucket}: {exc}") from exc
        return cls(kv, layout, in_force or ttl)

    @classmethod
    async def existing(cls, js: JetStreamContext, bucket: str, layout: Layout) -> Lease | None:
        kv = await _existing(js, bucket)
        return None if kv is None else cls(kv, layout, 0.0)

    @property
    def held(self) -> bool:
        return self._revision is not None

    async def holder(self) -> LeaseRecord | None:
        """The lease as it stands (None: nobody holds it)."""
        return await _get(self._kv, self._key, LeaseRecord)

    def _record(self, holder: str) -> bytes:
        now = self._clock()
        return _encoder.encode(
            LeaseRecord(holder=holder, since=self._since or now, renewed_at=now, ttl=self.ttl)
        )

    async def acquire(self, holder: str) -> bool:
        """Take the lease if nobody holds it (or it expired); False while someone else does."""
        self._since = 0.0
        try:
            self._revision = await self._kv.create(self._key, self._record(holder))
        except (KeyWrongLastSequenceError, BadRequestError):
            self._revision = None
            return False
        except (NatsError, TimeoutError) as exc:
            self._revision = None
            raise BusError(f"cannot take the watch lease: {exc}") from exc
        self._since = self._clock()
        return True

    async def renew(self, holder: str) -> bool:
        """Renew a lease held; False when it was lost (expired, or taken since): stop working."""
        if self._revision is None:
            return False
        try:
            self._revision = await self._kv.update(self._key, self._record(holder), last=self._revision)
        except (KeyWrongLastSequenceError, BadRequestError):
            self._revision = None
            return False
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"cannot renew the watch lease: {exc}") from exc
        return True

    async def release(self) -> None:
        """Give the lease up (a clean stop): a waiting watcher takes it without waiting for the TTL."""
        if self._revision is None:
            return
        try:
            await self._kv.delete(self._key, last=self._revision)
        except (KeyWrongLastSequenceError, BadRequestError):
            pass  # lost already: nothing of ours to release
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"cannot release the watch lease: {exc}") from exc
        finally:
            self._revision = None
