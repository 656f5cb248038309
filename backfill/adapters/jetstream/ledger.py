"""What JetStream does not remember about a delivery, kept in one JetStream key-value bucket.

- **When a message first failed** (`failure.<stream>.<seq>`): the retry budget counts from there, not
  from the enqueue, so time spent waiting in the queue (hours, in a paced run) never counts as retrying.
  Any replica may see a message's later deliveries, so this is shared, not per process.
- **Until when a message is known to be alive** (`alive.<stream>.<seq>`): written when a delivery
  fails (its redelivery is due after the delay) and when a slow delivery reports progress, with the
  delivery count. The sweeper uses it to tell a message JetStream will still deliver from one it has
  given up on.
- **Which envelope reached NATS for a row and backfill version** (`envelope.<correlation id>`): every
  worker watches `content.published.v1` and records the first envelope of each backfill correlation id
  it sees (`backfill.adapters.jetstream.envelopes`), whichever replica published it: a redelivery that
  finds one merges it instead of publishing again, even when the replica that published is dead.
- **Which ids Agent Zero answered without their envelope ever being seen** (`unconfirmed.<correlation
  id>`): kept for the record (and to stop republishing a row whose envelopes never show up).

The bucket's entries expire (`max_age`) a day after the retry budget, so nothing needs cleaning up by
hand. Every failure of the bucket is a `BusError`; callers decide what it costs them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from backfill.adapters.jetstream.bus import key_value_bucket
from backfill.core.errors import BusError
from backfill.core.ledger import Alive, FailedDelivery, Failing, count_failure, key_token

log = logging.getLogger(__name__)
KEEP_AFTER_BUDGET = 24 * 3600.0


_failing_encoder = msgspec.json.Encoder()
_failing_decoder = msgspec.json.Decoder(Failing)
_alive_encoder = msgspec.json.Encoder()
_alive_decoder = msgspec.json.Decoder(Alive)
_ids_decoder = msgspec.json.Decoder(list[str])


class Ledger:
    def __init__(self, kv: KeyValue, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._clock = clock

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, budget_seconds: float, replicas: int = 1
    ) -> Ledger:
        """Open (or create) the bucket, replicated like the work stream: a ledger on one node of a
        cluster would stop every republish when that node is lost."""
        ttl = budget_seconds + KEEP_AFTER_BUDGET
        description = "backfill: first failure per message, envelope seen per row and version"
        kv = await key_value_bucket(js, bucket, "ledger", description, replicas=replicas, ttl=ttl)
        return cls(kv)

    async def retrying_for(self, stream: str, seq: int, delivery: FailedDelivery) -> float:
        """Seconds message `seq` has been retrying, this failed `delivery` included (see
        `count_failure`); notes the failure for the next delivery, on whichever replica it lands."""
        key = f"failure.{stream}.{seq}"
        now = self._clock()
        try:
            try:
                await self._kv.create(key, _failing_encoder.encode(count_failure(None, delivery, now)))
                return 0.0
            except (KeyWrongLastSequenceError, BadRequestError):  # an earlier delivery failed first
                entry = await self._kv.get(key)
        except (NatsError, TimeoutError, KeyNotFoundError) as exc:
            raise BusError(f"ledger: first failure of message {seq}: {exc}") from exc
        try:
            previous: Failing | None = _failing_decoder.decode(entry.value or b"")
        except msgspec.DecodeError:  # unreadable entry: start the count again rather than fail the message
            log.warning("ledger: unreadable first-failure entry replaced", extra={"seq": seq})
            previous = None
        failing = count_failure(previous, delivery, now)
        await self._put(key, _failing_encoder.encode(failing))
        return max(now - failing.first, 0.0)

    async def settled(self, stream: str, seq: int) -> None:
        """Message `seq` left the stream (acked or dead-lettered): forget what was noted about it."""
        try:
            for kind in ("failure", "alive"):
                await self._kv.purge(f"{kind}.{stream}.{seq}")
        except (NatsError, TimeoutError) as exc:  # it expires on its own
            log.warning("ledger: could not forget a message", extra={"seq": seq, "error": str(exc)})

    async def note_alive(self, stream: str, seq: int, alive: Alive) -> None:
        await self._put(f"alive.{stream}.{seq}", _alive_encoder.encode(alive))

    async def alive(self, stream: str, seq: int) -> Alive | None:
        value = await self._get(f"alive.{stream}.{seq}")
        try:
            return None if value is None else _alive_decoder.decode(value)
        except msgspec.DecodeError:
            return None  # unreadable: judged as if nothing had been noted

    async def envelope_seen(self, correlation_id: str) -> str | None:
        """The id of the first envelope seen on NATS with this correlation id, if any was recorded."""
        value = await self._get(f"envelope.{key_token(correlation_id)}")
        return value.decode(errors="replace") if value else None

    async def record_envelope(self, correlation_id: str, envelope_id: str) -> None:
        """Record an envelope seen on NATS; the first one recorded for a correlation id stays (every
        replica records what it sees: the others find it there)."""
        try:  # only if the key has no value yet: one round trip (`create` makes two when it has one)
            await self._kv.update(f"envelope.{key_token(correlation_id)}", envelope_id.encode(), last=0)
        except (KeyWrongLastSequenceError, BadRequestError):
            return  # another replica (or an earlier envelope) was first
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"ledger: cannot record envelope {envelope_id}: {exc}") from exc

    async def note_unconfirmed(self, correlation_id: str, envelope_id: str) -> int:
        """Keep an id Agent Zero answered whose envelope was never seen; how many such ids the
        correlation id has now. Only the delivery that holds the row writes here."""
        key = f"unconfirmed.{key_token(correlation_id)}"
        value = await self._get(key)
        try:
            answered = _ids_decoder.decode(value) if value else []
        except msgspec.DecodeError:
            answered = []
        if envelope_id not in answered:
            answered.append(envelope_id)
        await self._put(key, msgspec.json.encode(answered))
        return len(answered)

    async def _get(self, key: str) -> bytes | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"ledger: cannot read {key}: {exc}") from exc
        return entry.value or b""

    async def _put(self, key: str, value: bytes) -> None:
        try:
            await self._kv.put(key, value)
        except (NatsError, TimeoutError) as exc:
            raise BusError(f"ledger: cannot write {key}: {exc}") from exc
