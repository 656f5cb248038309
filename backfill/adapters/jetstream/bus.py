"""NATS connection and pipelined JetStream publishing with every acknowledgement awaited.

nats-py's own `publish_async` leaves the future unresolved when the server answers with an error such
as 10077 (per-subject limit), which is exactly the answer that means "already pending" here; this
publisher parses every answer itself, resolves every future (stored, duplicate, already pending, failed)
and times out what never gets an answer.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import re
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from backfill.adapters.jetstream import natspy
from backfill.core.errors import BusError

log = logging.getLogger(__name__)
PER_SUBJECT_LIMIT = 10077  # "maximum messages per subject exceeded": the row already has a pending message
API_TIMEOUT = 10.0
PING_INTERVAL = 20  # seconds between the client's pings to the server
FIRST_CONNECT = 2.0  # seconds a program waits for its first connection to NATS, unless it says otherwise
DELETE_FAILED = 10057  # "no message found" / "stream store EOF": the sequence is not (any longer) there


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def failure(what: str, exc: BaseException) -> BusError:
    """A nats-py failure as BusError: `what` failed, and the library's message (or its type, when it
    has none)."""
    return BusError(f"{what}: {exc}" if str(exc) else f"{what}: {type(exc).__name__}")


def mask_credentials(text: str) -> str:
    """`nats://user:password@host` (or `nats://token@host`) as `nats://***@host`, wherever it appears."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


async def connect(
    url: str, name: str, *, reconnect_forever: bool, first_connect: float = FIRST_CONNECT
) -> NatsClient:
    """Connect within `first_connect` seconds, else BusError naming the URL and the last failure (a
    program that cannot reach NATS at start says so and exits, instead of retrying unseen). Once
    connected, a worker reconnects forever (nats-py gives up after ~2 minutes by default), a command
    gives up after 10 attempts. NATS_URL may carry credentials: nothing printed here shows them."""
    nc = NatsClient()
    connected = asyncio.Event()
    first_failure: list[Exception] = []  # the failures before the first connection, newest last

    async def on_error(exc: Exception) -> None:
        if not connected.is_set():
            if not first_failure and reconnect_forever:
                log.warning(
                    "nats: not reachable yet, retrying for up to %gs: %s",
                    first_connect,
                    mask_credentials(str(exc)),
                )
            first_failure.append(exc)
            return
        log.warning("nats: %s", mask_credentials(str(exc)))

    async def on_disconnect() -> None:
        if nc.is_draining or nc.is_closed:
            return  # our own shutdown, not an outage
        log.warning("nats: disconnected, reconnecting")

    async def on_reconnect() -> None:
        log.info("nats: reconnected")

    attempt = nc.connect(
        servers=[s.strip() for s in url.split(",")],
        name=name,
        max_reconnect_attempts=-1 if reconnect_forever else 10,
        reconnect_time_wait=1,
        # a silent dead connection noticed in about a minute (nats-py's default: about four), so that a
        # worker's envelope watch is blind for as short a time as it can be (docs/delivery.md)
        ping_interval=PING_INTERVAL,
        max_outstanding_pings=3,
        connect_timeout=max(1, min(5, round(first_connect))),
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        allow_reconnect=True,
    )
    try:
        await asyncio.wait_for(attempt, first_connect)
    except (NatsError, OSError, TimeoutError) as exc:
        await nc.close()
        cause = first_failure[-1] if first_failure else exc
        reason = str(cause) or type(cause).__name__
        raise BusError(
            f"cannot connect to NATS at {mask_credentials(url)} within {first_connect:g}s: "
            f"{mask_credentials(reason)}"
        ) from exc
    connected.set()
    return nc


class Bus:
    """One connection to NATS and its JetStream context: what a program holds and hands to the adapters
    (`bus.js` to the JetStream ones, `bus.nc` to those of core NATS). Nothing above the adapters needs
    more of nats-py than this."""

    def __init__(self, nc: NatsClient, api_timeout: float = API_TIMEOUT) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=api_timeout)

    @classmethod
    async def connect(
        cls, url: str, name: str, *, reconnect_forever: bool, first_connect: float = FIRST_CONNECT
    ) -> Bus:
        """`connect`, then the JetStream context (API requests time out after 10 s)."""
        return cls(await connect(url, name, reconnect_forever=reconnect_forever, first_connect=first_connect))

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def messages_sent(self) -> int:
        """Messages this connection has sent (publishes and JetStream API requests alike)."""
        return int(self.nc.stats["out_msgs"])

    async def drain(self) -> None:
        """Finish what was sent and received, then close: the end of a program's use of NATS."""
        await self.nc.drain()

    async def close(self) -> None:
        await self.nc.close()


class PubStatus(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same Nats-Msg-Id inside the duplicate window
    ALREADY_PENDING = "already_pending"  # per-subject limit: the row already waits in the stream
    FAILED = "failed"


@dataclass(frozen=True)
class PubResult:
    status: PubStatus
    seq: int | None = None
    error: str | None = None


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str | None = None
    seq: int | None = None
    duplicate: bool = False
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)


class _DeleteAnswer(msgspec.Struct):
    success: bool = False
    error: _ApiError | None = None


_delete_decoder = msgspec.json.Decoder(_DeleteAnswer)
_delete_encoder = msgspec.json.Encoder()


async def key_value_bucket(
    js: JetStreamContext,
    bucket: str,
    what: str,
    description: str,
    *,
    replicas: int = 1,
    ttl: float | None = None,
) -> KeyValue:
    """Open (or create) a key-value bucket keeping only each key's latest value, replicated like the
    work stream (a bucket on one node of a cluster would stop the workers when that node is lost).
    The configuration, description included, must stay what existing buckets have: the server refuses
    to open a bucket under another one."""
    try:
        return await js.create_key_value(
            bucket=bucket, history=1, replicas=replicas, ttl=ttl, description=description
        )
    except (NatsError, TimeoutError) as exc:
        raise BusError(f"cannot open the {what} bucket {bucket}: {exc}") from exc


async def remove_message(js: JetStreamContext, stream: str, seq: int) -> bool:
    """Remove message `seq` from `stream` without secure erase; False when it is already gone.

    nats-py's `delete_msg` asks the server to overwrite the message first (its default), which `make
    bench` measured at ~230 deletes/s against ~6,200/s with `no_erase` on the same server: the dead-letter
    replay was bound by it. These messages carry no secrets (details are redacted), so the space is
    reclaimed on compaction instead. A missing stream or a refusal raises BusError.
    """
    subject = f"{natspy.api_prefix(js)}.STREAM.MSG.DELETE.{stream}"  # nats-py has no public no_erase option
    body = _delete_encoder.encode({"seq": seq, "no_erase": True})
    try:
        reply = await natspy.connection(js).request(subject, body, timeout=API_TIMEOUT)
    except (NatsError, TimeoutError) as exc:
        raise failure(f"deleting {stream} seq {seq}", exc) from exc
    try:
        answer = _delete_decoder.decode(reply.data)
    except msgspec.DecodeError as exc:
        raise BusError(f"deleting {stream} seq {seq}: unreadable answer: {exc}") from exc
    if answer.error is not None:
        gone = ("no message found" in answer.error.description, "EOF" in answer.error.description)
        if answer.error.err_code == DELETE_FAILED and any(gone):
            return False
        raise BusError(f"deleting {stream} seq {seq}: {answer.error.err_code}: {answer.error.description}")
    return answer.success


def parse_ack(msg: Msg) -> PubResult:
    """Turn a JetStream publish answer (or a no-responders status) into a PubResult."""
    if msg.headers and msg.headers.get("Status") == "503":
        return PubResult(PubStatus.FAILED, error="no stream listens on this subject")
    try:
        ack = _ack_decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        return PubResult(PubStatus.FAILED, error=f"unreadable publish answer: {exc}")
    if ack.error is not None:
        if ack.error.err_code == PER_SUBJECT_LIMIT:
            return PubResult(PubStatus.ALREADY_PENDING)
        return PubResult(PubStatus.FAILED, error=f"{ack.error.err_code}: {ack.error.description}")
    return PubResult(PubStatus.DUPLICATE if ack.duplicate else PubStatus.STORED, seq=ack.seq)


class AckPublisher:
    """Many publishes in flight (bounded by `window`), each resolved by its own acknowledgement.

    Unanswered publishes expire after `timeout` through one timer for all of them (answers come back
    in about the order they were sent), not one timer per message: on the enqueue and replay paths a
    timer per message was a measurable share of the producer's CPU.
    """

    def __init__(self, nc: NatsClient, window: int = 2048, timeout: float = 10.0) -> None:
        self._nc = nc
        self._window = asyncio.Semaphore(window)
        self._timeout = timeout
        self._pending: dict[str, asyncio.Future[PubResult]] = {}
        self._deadlines: collections.deque[tuple[float, str]] = collections.deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._prefix = ""
        self._sub: Subscription | None = None
        self._counter = 0

    async def start(self) -> None:
        self._prefix = f"{self._nc.new_inbox()}."
        self._sub = await self._nc.subscribe(f"{self._prefix}*", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(parse_ack(msg))
        deadlines, pending = self._deadlines, self._pending
        while deadlines and deadlines[0][1] not in pending:  # answered: no need to remember when it expires
            deadlines.popleft()

    def _expire(self, token: str) -> None:
        future = self._pending.pop(token, None)
        if future is not None and not future.done():
            future.set_result(
                PubResult(PubStatus.FAILED, error=f"no acknowledgement within {self._timeout}s")
            )

    def _expire_due(self) -> None:
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._deadlines and (
            self._deadlines[0][0] <= now or self._deadlines[0][1] not in self._pending
        ):
            self._expire(self._deadlines.popleft()[1])
        if self._deadlines:
            self._expiry = loop.call_at(self._deadlines[0][0], self._expire_due)

    def _release(self, _future: asyncio.Future[PubResult]) -> None:
        self._window.release()

    async def submit(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> asyncio.Future[PubResult]:
        """Send now; the returned future resolves with the acknowledgement (never raises, never hangs)."""
        if not self._prefix:
            await self.start()
        await self._window.acquire()
        self._counter += 1
        token = str(self._counter)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PubResult] = loop.create_future()
        future.add_done_callback(self._release)
        self._pending[token] = future
        self._deadlines.append((loop.time() + self._timeout, token))
        if self._expiry is None:
            self._expiry = loop.call_at(self._deadlines[0][0], self._expire_due)
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        except (NatsError, OSError) as exc:
            self._pending.pop(token, None)
            future.set_result(PubResult(PubStatus.FAILED, error=f"publish failed: {exc}"))
        return future

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> PubResult:
        """One publish, awaited."""
        return await (await self.submit(subject, data, headers))

    async def close(self) -> None:
        for token in list(self._pending):
            self._expire(token)
        self._deadlines.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None


# The types of `Bus.nc` and `Bus.js`, for code that only hands them on to the adapters: it names them
# without importing nats-py.
Connection = NatsClient
JetStream = JetStreamContext


def api_failure(exc: Exception) -> BusError:
    """A JetStream API request that got no answer in time, or failed otherwise, as BusError."""
    if isinstance(exc, TimeoutError):
        return BusError(f"JetStream did not answer: {exc}")
    return failure("JetStream failed", exc)
