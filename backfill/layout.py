"""The JetStream layout both programs agree on: work stream, dead-letter stream, durable consumer.

`ensure_layout` creates what is missing and updates what can change in place. It never deletes or
recreates a stream: a stream whose retention, storage or subjects differ is reported as a conflict,
because recreating it would lose the messages it holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from backfill.errors import BusError, StreamConfigConflict
from backfill.settings import NatsSettings
from backfill.wire import dlq_filter, request_filter

log = logging.getLogger(__name__)
DAY = 24 * 3600.0


@dataclass(frozen=True)
class Layout:
    prefix: str
    work: StreamConfig
    dlq: StreamConfig
    consumer: ConsumerConfig

    @property
    def stream(self) -> str:
        return str(self.work.name)

    @property
    def dlq_stream(self) -> str:
        return str(self.dlq.name)

    @property
    def durable(self) -> str:
        return str(self.consumer.durable_name)


def build_layout(settings: NatsSettings) -> Layout:
    """One message per row subject at most (`discard_new_per_subject`): re-enqueueing never duplicates."""
    work = StreamConfig(
        name=settings.stream,
        subjects=[request_filter(settings.subject_prefix)],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.NEW,
        discard_new_per_subject=True,
        num_replicas=settings.replicas,
        duplicate_window=120.0,
    )
    dlq = StreamConfig(
        name=settings.dlq_stream,
        subjects=[dlq_filter(settings.subject_prefix)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.dlq_max_age_days * DAY,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.replicas,
        duplicate_window=120.0,
    )
    consumer = ConsumerConfig(
        durable_name=settings.consumer,
        filter_subject=request_filter(settings.subject_prefix),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait,
        max_deliver=settings.max_deliver,
        max_ack_pending=settings.max_ack_pending,
    )
    return Layout(prefix=settings.subject_prefix, work=work, dlq=dlq, consumer=consumer)


def stream_conflicts(existing: StreamConfig, wanted: StreamConfig) -> list[str]:
    """Differences that cannot be updated in place (or would change what the stream means)."""
    problems = []
    if existing.retention != wanted.retention:
        problems.append(f"retention is {existing.retention}, needs {wanted.retention}")
    if existing.storage != wanted.storage:
        problems.append(f"storage is {existing.storage}, needs {wanted.storage}")
    if sorted(existing.subjects or []) != sorted(wanted.subjects or []):
        problems.append(f"subjects are {existing.subjects}, needs {wanted.subjects}")
    return problems


def _needs_update(existing: StreamConfig, wanted: StreamConfig) -> bool:
    """Only real differences: the server reports an unset max_age as 0 (no limit), so None == 0."""
    fields = ("max_msgs_per_subject", "discard", "discard_new_per_subject", "num_replicas")
    if (existing.max_age or 0.0) != (wanted.max_age or 0.0):
        return True
    return any(getattr(existing, f) != getattr(wanted, f) for f in fields)


async def ensure_stream(js: JetStreamContext, wanted: StreamConfig) -> None:
    try:
        info = await js.stream_info(str(wanted.name))
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("created stream %s", wanted.name)
        return
    problems = stream_conflicts(info.config, wanted)
    if problems:
        raise StreamConfigConflict(
            f"stream {wanted.name} exists with an incompatible configuration ({'; '.join(problems)}). "
            "It was left untouched so none of its messages are lost: drain it, or configure other names "
            "with BACKFILL_STREAM / BACKFILL_DLQ_STREAM / BACKFILL_SUBJECT_PREFIX."
        )
    if _needs_update(info.config, wanted):
        await js.update_stream(wanted)
        log.info("updated stream %s", wanted.name)


def consumer_conflicts(existing: ConsumerConfig, wanted: ConsumerConfig) -> list[str]:
    problems = []
    if existing.deliver_subject:
        problems.append("it is a push consumer; the workers need a pull consumer")
    if existing.filter_subject != wanted.filter_subject:
        problems.append(f"filter is {existing.filter_subject!r}, needs {wanted.filter_subject!r}")
    if existing.ack_policy != wanted.ack_policy:
        problems.append(f"ack policy is {existing.ack_policy}, needs {wanted.ack_policy}")
    return problems


async def ensure_consumer(js: JetStreamContext, stream: str, wanted: ConsumerConfig) -> None:
    try:
        info = await js.consumer_info(stream, str(wanted.durable_name))
    except NotFoundError:
        info = None
    if info is not None:
        problems = consumer_conflicts(info.config, wanted)
        if problems:
            raise StreamConfigConflict(f"consumer {wanted.durable_name} on {stream}: {'; '.join(problems)}")
        same = all(
            getattr(info.config, f) == getattr(wanted, f)
            for f in ("ack_wait", "max_deliver", "max_ack_pending")
        )
        if same:
            return
    await js.add_consumer(stream, wanted)  # create, or update the editable fields in place
    log.info("%s consumer %s on %s", "updated" if info else "created", wanted.durable_name, stream)


async def ensure_layout(js: JetStreamContext, layout: Layout, *, with_consumer: bool = True) -> None:
    """Create or update the streams (and the consumer); safe to run from every replica at once."""
    try:
        await ensure_stream(js, layout.work)
        await ensure_stream(js, layout.dlq)
        if with_consumer:
            await ensure_consumer(js, layout.stream, layout.consumer)
    except APIError as exc:
        raise BusError(f"JetStream refused the layout: {exc}") from exc
    except TimeoutError as exc:
        raise BusError(
            "JetStream did not answer while setting up the layout (is it enabled with -js?)"
        ) from exc
