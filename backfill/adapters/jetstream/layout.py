"""The JetStream layout both programs agree on: work stream, dead-letter stream, durable consumer.

`ensure_layout` (run by workers and `producer enqueue`) creates what is missing and changes nothing
that exists: settings that differ from the caller's environment are logged with the command that
applies them (`producer layout --apply`), so no shell with another `BACKFILL_ACK_WAIT` reconfigures
production by accident. `plan_layout` lists the differences; `apply_changes` makes them. Nothing here
deletes or recreates a stream: a stream whose retention, storage or subjects differ is a conflict,
because recreating it would lose the messages it holds. `require_layout` is for commands that only
read: it says what is missing, and creates nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

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

from backfill.core.errors import BusError, NotFound, StreamConfigConflict
from backfill.core.wire import dlq_filter, request_filter
from backfill.settings import NatsSettings

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


def consumer_conflicts(existing: ConsumerConfig, wanted: ConsumerConfig) -> list[str]:
    problems = []
    if existing.deliver_subject:
        problems.append("it is a push consumer; the workers need a pull consumer")
    if existing.filter_subject != wanted.filter_subject:
        problems.append(f"filter is {existing.filter_subject!r}, needs {wanted.filter_subject!r}")
    if existing.ack_policy != wanted.ack_policy:
        problems.append(f"ack policy is {existing.ack_policy}, needs {wanted.ack_policy}")
    return problems


STREAM_FIELDS = ("max_msgs_per_subject", "discard", "discard_new_per_subject", "num_replicas", "max_age")
CONSUMER_FIELDS = ("ack_wait", "max_deliver", "max_ack_pending")
WHAT_NAMES_IT = "BACKFILL_STREAM, BACKFILL_DLQ_STREAM and BACKFILL_CONSUMER name the layout the workers use"


@dataclass(frozen=True)
class Change:
    """One difference between the server and this environment's layout."""

    action: str  # "create" or "update"
    kind: str  # "stream" or "consumer"
    name: str
    fields: tuple[tuple[str, Any, Any], ...] = ()  # (field, on the server, wanted)

    def render(self) -> str:
        if self.action == "create":
            return f"+ {self.kind} {self.name} (missing)"
        changed = ", ".join(f"{f} {_shown(now)} -> {_shown(wanted)}" for f, now, wanted in self.fields)
        return f"~ {self.kind} {self.name}: {changed}"

    def as_dict(self) -> dict[str, Any]:
        fields = [{"field": f, "current": now, "wanted": wanted} for f, now, wanted in self.fields]
        return {"action": self.action, "kind": self.kind, "name": self.name, "fields": fields}


def _shown(value: Any) -> str:
    return str(getattr(value, "value", value))


@dataclass
class LayoutPlan:
    changes: list[Change] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[Change]:
        return [c for c in self.changes if c.action == "create"]

    @property
    def drift(self) -> list[Change]:
        return [c for c in self.changes if c.action == "update"]


def _stream_fields(existing: StreamConfig, wanted: StreamConfig) -> tuple[tuple[str, Any, Any], ...]:
    """Real differences only: the server reports an unset max_age as 0 (no limit), so None == 0."""
    found = []
    for name in STREAM_FIELDS:
        now, want = getattr(existing, name), getattr(wanted, name)
        if name == "max_age":
            now, want = now or 0.0, want or 0.0
        if now != want:
            found.append((name, now, want))
    return tuple(found)


async def _plan_stream(js: JetStreamContext, wanted: StreamConfig, plan: LayoutPlan) -> None:
    try:
        info = await js.stream_info(str(wanted.name))
    except NotFoundError:
        plan.changes.append(Change("create", "stream", str(wanted.name)))
        return
    problems = stream_conflicts(info.config, wanted)
    if problems:
        plan.conflicts.append(
            f"stream {wanted.name} exists with an incompatible configuration ({'; '.join(problems)}). "
            "It was left untouched so none of its messages are lost: drain it, or configure other names "
            "with BACKFILL_STREAM / BACKFILL_DLQ_STREAM / BACKFILL_SUBJECT_PREFIX."
        )
    elif fields := _stream_fields(info.config, wanted):
        plan.changes.append(Change("update", "stream", str(wanted.name), fields))


async def _plan_consumer(js: JetStreamContext, stream: str, wanted: ConsumerConfig, plan: LayoutPlan) -> None:
    name = str(wanted.durable_name)
    try:
        info = await js.consumer_info(stream, name)
    except NotFoundError:
        plan.changes.append(Change("create", "consumer", name))
        return
    problems = consumer_conflicts(info.config, wanted)
    if problems:
        plan.conflicts.append(f"consumer {name} on {stream}: {'; '.join(problems)}")
        return
    fields = tuple(
        (f, getattr(info.config, f), getattr(wanted, f))
        for f in CONSUMER_FIELDS
        if getattr(info.config, f) != getattr(wanted, f)
    )
    if fields:
        plan.changes.append(Change("update", "consumer", name, fields))


async def plan_layout(js: JetStreamContext, layout: Layout, *, with_consumer: bool = True) -> LayoutPlan:
    """What differs between the server and `layout`: missing parts, changed settings, conflicts."""
    plan = LayoutPlan()
    await _guarded(_plan_stream(js, layout.work, plan))
    await _guarded(_plan_stream(js, layout.dlq, plan))
    if with_consumer and not any(c.name == layout.stream for c in plan.missing):
        await _guarded(_plan_consumer(js, layout.stream, layout.consumer, plan))
    elif with_consumer:
        plan.changes.append(Change("create", "consumer", layout.durable))
    return plan


async def apply_changes(js: JetStreamContext, layout: Layout, changes: list[Change]) -> None:
    """Create or update in place (streams first: the consumer needs its stream)."""
    streams = {layout.stream: layout.work, layout.dlq_stream: layout.dlq}
    for change in sorted(changes, key=lambda c: c.kind != "stream"):
        if change.kind == "stream":
            config = streams[change.name]
            await _guarded(js.add_stream(config) if change.action == "create" else js.update_stream(config))
        else:
            await _guarded(js.add_consumer(layout.stream, layout.consumer))  # creates, or updates in place
        log.info("%sd %s %s", change.action, change.kind, change.name)


async def ensure_layout(js: JetStreamContext, layout: Layout, *, with_consumer: bool = True) -> Layout:
    """Create what is missing, change nothing that exists, and return the layout in force (the
    consumer's settings as the server has them). Safe to run from every replica at once."""
    plan = await plan_layout(js, layout, with_consumer=with_consumer)
    if plan.conflicts:
        raise StreamConfigConflict(" ".join(plan.conflicts))
    await apply_changes(js, layout, plan.missing)
    for change in plan.drift:
        log.warning(
            "%s %s differs from this environment (%s); left as it is: `producer layout --apply` changes it",
            change.kind,
            change.name,
            change.render().split(": ", 1)[1],
        )
    if not with_consumer:
        return layout
    return await _in_force(js, layout)


async def _in_force(js: JetStreamContext, layout: Layout) -> Layout:
    info = await _guarded(js.consumer_info(layout.stream, layout.durable))
    server = {f: getattr(info.config, f) for f in CONSUMER_FIELDS}
    return replace(layout, consumer=replace(layout.consumer, **server))


async def require_layout(js: JetStreamContext, layout: Layout, *, with_consumer: bool = True) -> Layout:
    """For commands that only read: the layout in force, or NotFound naming what is missing."""
    plan = await plan_layout(js, layout, with_consumer=with_consumer)
    if plan.missing:
        missing = ", ".join(f"{c.kind} {c.name!r}" for c in plan.missing)
        raise NotFound(
            f"{missing} not found on this NATS server. Nothing was enqueued yet, or this shell's settings "
            f"name another layout: {WHAT_NAMES_IT}."
        )
    return await _in_force(js, layout) if with_consumer else layout


async def _guarded(call: Any) -> Any:
    try:
        return await call
    except NotFoundError:
        raise
    except APIError as exc:
        raise BusError(f"JetStream refused the layout: {exc}") from exc
    except TimeoutError as exc:
        raise BusError(
            "JetStream did not answer while reading or setting up the layout (is it enabled with -js?)"
        ) from exc
