"""One republish pace for all replicas together: a token bucket kept in a JetStream key-value bucket.

Every Agent Zero post becomes a Discord embed (docs/upstreams.md §4: about 5 requests per 2 s per
webhook, 30 per minute per channel), so the rate is global, not per process: tokens are taken with a
compare-and-set update of the shared bucket state; a lost race just reads again. Adding replicas
never raises the rate. The refill uses each worker's wall clock: keep hosts on NTP.

Each process talks to the bucket through one dispenser task: it takes tokens for all the local
waiters, several per compare-and-set when the bucket has them, and hands them out in arrival order, so
the messages of one worker never race each other for the same revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from backfill.adapters.jetstream.bus import key_value_bucket
from backfill.core.errors import BusError
from backfill.core.pace import UNCAPPED, BucketState, PaceConfig, Turn, take_many

log = logging.getLogger(__name__)
KEY = "republish"
# JetStream's "wrong last sequence" codes: a lost compare-and-set (older nats-py raise them as a plain
# BadRequestError; any other bad request is a failure, not a race to retry at once)
WRONG_LAST_SEQUENCE = (10071, 10164)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(BucketState)


class GlobalPace:
    """`turn()` for each republish message; `headroom()` caps the fetch while turns are waiting."""

    def __init__(self, kv: KeyValue, config: PaceConfig, clock: Callable[[], float] = time.time) -> None:
        self._kv = kv
        self._config = config
        self._clock = clock
        self._closing = asyncio.Event()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._spare = 0  # taken from the bucket for a waiter that left before its hand-out
        self._dispenser: asyncio.Task[None] | None = None
        # The state and revision of this process's last write: the next take tries them first and reads
        # the bucket only when another replica wrote since.
        self._known: tuple[BucketState | None, int] | None = None
        # Whether the bucket is the limit: its last take left it dry (or found it dry). Until the first
        # take it is not known, and assumed to be.
        self._binding = True
        self.waiting = 0  # open turns: republish messages held here without a token

    @classmethod
    async def open(
        cls, js: JetStreamContext, bucket: str, config: PaceConfig, replicas: int = 1
    ) -> GlobalPace:
        return cls(
            await key_value_bucket(js, bucket, "pace", "backfill republish pace", replicas=replicas), config
        )

    def headroom(self) -> int:
        """How many more messages are worth fetching now. While republish messages are held here and
        the bucket is the limit: what one burst can serve (never hoard what the pace forbids). Else no
        cap: metadata-only work, and republishing under a pace it does not reach, flow at full
        concurrency."""
        if self.waiting == 0 or not self._binding:
            return UNCAPPED
        return max(self._config.burst - self.waiting, 0)

    def turn(self) -> Turn:
        return Turn(self)

    async def acquire(self) -> None:
        """Wait for one token (a turn taken at once)."""
        await self.turn().take()

    def close(self) -> None:
        """Shutting down: every waiter gives up now (a retry: another replica takes the message) instead
        of holding its message through the shutdown grace."""
        self._closing.set()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(BusError("shutting down: not waiting for the pace"))

    async def acquire_token(self) -> None:
        if self._closing.is_set():
            raise BusError("shutting down: not waiting for the pace")
        if self._spare and not self._waiters:
            self._spare -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._dispenser is None or self._dispenser.done():
            self._dispenser = asyncio.create_task(self._dispense())
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._spare += 1  # handed a token just as its message was given up: the next one has it
            raise

    async def _dispense(self) -> None:
        """Serve the local waiters in order until none is left (or shutdown)."""
        while not self._closing.is_set():
            while self._waiters and self._waiters[0].done():  # given up (cancelled) meanwhile
                self._waiters.popleft()
            if not self._waiters:
                return
            want = min(len(self._waiters), self._config.most_per_take)
            try:
                got, wait = await self._take(want)
            except (NatsError, TimeoutError, BusError) as exc:
                self._fail(want, exc)
                continue
            self._hand_out(got)
            if got == 0 and wait > 0.0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=min(wait, 1.0))

    def _hand_out(self, tokens: int) -> None:
        for _ in range(tokens):
            while self._waiters and self._waiters[0].done():
                self._waiters.popleft()
            if not self._waiters:
                self._spare += 1
                continue
            self._waiters.popleft().set_result(None)

    def _fail(self, count: int, exc: BaseException) -> None:
        """The bucket cannot be reached: the messages being served become retries (their retry policy
        bounds this); the rest wait for the next attempt."""
        log.warning("pace bucket unavailable", extra={"error": str(exc) or type(exc).__name__})
        self._known = None
        for _ in range(count):
            if not self._waiters:
                return
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(BusError(f"pace bucket unavailable: {exc!r}"))

    async def _take(self, want: int) -> tuple[int, float]:
        """(tokens taken, 0) or (0, how long to wait). A lost compare-and-set answers (0, 0): read again."""
        current, revision = self._known if self._known is not None else await self._read()
        state, got, wait = take_many(current, self._clock(), self._config, want)
        self._binding = state.tokens < 1.0
        if got == 0:
            return 0, wait
        try:
            if revision == 0:
                written = await self._kv.create(KEY, _encoder.encode(state))
            else:
                written = await self._kv.update(KEY, _encoder.encode(state), last=revision)
        except BadRequestError as exc:  # KeyWrongLastSequenceError is one
            if not isinstance(exc, KeyWrongLastSequenceError) and exc.err_code not in WRONG_LAST_SEQUENCE:
                raise
            self._known = None  # another replica took tokens first
            return 0, 0.0
        self._known = (state, written)
        return got, 0.0

    async def _read(self) -> tuple[BucketState | None, int]:
        """The bucket's state and revision (0: no state yet); an unreadable state reads as none, to be
        overwritten by compare-and-set."""
        try:
            entry = await self._kv.get(KEY)
        except KeyNotFoundError:
            return None, 0
        revision = entry.revision or 0
        try:
            return _decoder.decode(entry.value or b""), revision
        except msgspec.DecodeError:
            unreadable = repr((entry.value or b"")[:100])
            log.warning("pace bucket state unreadable; repairing it", extra={"value": unreadable})
            return None, revision
