"""The JetStream layout against a real nats-server: idempotent, one pending message per row, no silent recreate."""

from __future__ import annotations

import asyncio
import logging

import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig

from backfill.adapters.jetstream.bus import AckPublisher, PubStatus, remove_message
from backfill.adapters.jetstream.layout import (
    Layout,
    apply_changes,
    build_layout,
    ensure_layout,
    plan_layout,
    require_layout,
)
from backfill.core.errors import BusError, NotFound, StreamConfigConflict
from backfill.settings import NatsSettings


async def laid_out(nc: NatsClient, layout_env: dict[str, str]) -> tuple[JetStreamContext, Layout]:
    """The test's streams and consumer, created as a worker creates them."""
    js = nc.jetstream()
    layout = build_layout(settings(layout_env))
    await ensure_layout(js, layout)
    return js, layout


def settings(layout_env: dict[str, str], **extra: object) -> NatsSettings:
    values = {
        "stream": layout_env["BACKFILL_STREAM"],
        "dlq_stream": layout_env["BACKFILL_DLQ_STREAM"],
        "consumer": layout_env["BACKFILL_CONSUMER"],
        "subject_prefix": layout_env["BACKFILL_SUBJECT_PREFIX"],
        **extra,
    }
    return NatsSettings.model_validate(
        {NatsSettings.model_fields[k].validation_alias: v for k, v in values.items()}
    )


async def test_ensure_layout_creates_what_is_missing_and_changes_nothing_that_exists(
    nc: NatsClient, layout_env: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """Running it twice changes nothing; another ack_wait/max_deliver in the caller's environment leaves
    the consumer as it is (a warning names `producer layout --apply`), and the layout in force is the
    server's; `plan_layout` lists the differences and `apply_changes` makes them."""
    js, layout = await laid_out(nc, layout_env)
    caplog.set_level(logging.INFO, logger="backfill.adapters.jetstream.layout")
    await ensure_layout(js, layout)
    assert not [r for r in caplog.records if "updated" in r.getMessage()]  # no needless update
    info = await js.stream_info(layout.stream)
    assert info.config.retention == RetentionPolicy.WORK_QUEUE
    assert info.config.max_msgs_per_subject == 1
    assert info.config.discard_new_per_subject is True
    changed = build_layout(settings(layout_env, ack_wait=12.0, max_deliver=4, dlq_max_age_days=7))
    in_force = await ensure_layout(js, changed)
    consumer = await js.consumer_info(layout.stream, layout.durable)
    assert (consumer.config.ack_wait, consumer.config.max_deliver) == (60.0, 10)
    assert (in_force.consumer.ack_wait, in_force.consumer.max_deliver) == (60.0, 10)
    assert [r for r in caplog.records if "producer layout --apply" in r.getMessage()]
    plan = await plan_layout(js, changed)
    assert not plan.missing and not plan.conflicts
    assert {(c.kind, c.name): [f for f, _, _ in c.fields] for c in plan.drift} == {
        ("consumer", layout.durable): ["ack_wait", "max_deliver"],
        ("stream", layout.dlq_stream): ["max_age"],
    }
    await apply_changes(js, changed, plan.drift)
    consumer = await js.consumer_info(layout.stream, layout.durable)
    assert (consumer.config.ack_wait, consumer.config.max_deliver) == (12.0, 4)
    assert (await js.stream_info(layout.dlq_stream)).config.max_age == 7 * 24 * 3600.0
    assert (await plan_layout(js, changed)).changes == []


async def test_require_layout_names_what_is_missing_and_creates_nothing(
    nc: NatsClient, layout_env: dict
) -> None:
    js = nc.jetstream()
    layout = build_layout(settings(layout_env))
    with pytest.raises(NotFound, match=f"stream '{layout.stream}'.*BACKFILL_STREAM"):
        await require_layout(js, layout)
    with pytest.raises(nats.js.errors.NotFoundError):
        await js.stream_info(layout.stream)


async def test_incompatible_stream_is_reported_not_recreated(nc: NatsClient, layout_env: dict) -> None:
    """A same-named stream with limits retention is a conflict, and its messages stay."""
    js = nc.jetstream()
    layout = build_layout(settings(layout_env))
    await js.add_stream(StreamConfig(name=layout.stream, subjects=[f"{layout.prefix}.request.>"]))
    await js.publish(f"{layout.prefix}.request.1", b"keep me")
    with pytest.raises(StreamConfigConflict, match="retention"):
        await ensure_layout(js, layout)
    assert (await js.stream_info(layout.stream)).state.messages == 1


async def test_second_enqueue_of_a_pending_row_is_rejected_until_acked(
    nc: NatsClient, layout_env: dict
) -> None:
    """Per-subject limit: the same row twice is 'already pending'; after the ack it can be enqueued again."""
    js, layout = await laid_out(nc, layout_env)
    publisher = AckPublisher(nc)
    subject = f"{layout.prefix}.request.7"
    assert (await publisher.publish(subject, b"1", {"Nats-Msg-Id": "a"})).status is PubStatus.STORED
    assert (await publisher.publish(subject, b"2", {"Nats-Msg-Id": "b"})).status is PubStatus.ALREADY_PENDING
    assert (await publisher.publish(subject, b"1", {"Nats-Msg-Id": "a"})).status is PubStatus.DUPLICATE
    psub = await js.pull_subscribe_bind(layout.durable, stream=layout.stream)
    (msg,) = await psub.fetch(1, timeout=2)
    await msg.ack_sync()
    assert (await publisher.publish(subject, b"3", {"Nats-Msg-Id": "c"})).status is PubStatus.STORED
    await publisher.close()


async def test_publish_without_a_stream_fails_fast(nc: NatsClient, layout_env: dict) -> None:
    """No stream on the subject: a FAILED result naming the cause, not a hang."""
    publisher = AckPublisher(nc, timeout=2)
    result = await publisher.publish(f"{layout_env['BACKFILL_SUBJECT_PREFIX']}.nowhere", b"x")
    assert result.status is PubStatus.FAILED
    assert "no stream" in (result.error or "")
    await publisher.close()


async def test_remove_message_deletes_once_then_reports_it_gone(nc: NatsClient, layout_env: dict) -> None:
    """`remove_message` (no secure erase): True, then False for the same or an unknown sequence."""
    js, layout = await laid_out(nc, layout_env)
    stored = await AckPublisher(nc).publish(f"{layout.prefix}.dlq.jellyfin_not_found", b"dead letter")
    assert stored.status is PubStatus.STORED and stored.seq is not None
    assert await remove_message(js, layout.dlq_stream, stored.seq) is True
    assert (await js.stream_info(layout.dlq_stream)).state.messages == 0
    assert await remove_message(js, layout.dlq_stream, stored.seq) is False
    assert await remove_message(js, layout.dlq_stream, stored.seq + 1000) is False
    with pytest.raises(BusError, match="stream not found"):
        await remove_message(js, "NO_SUCH_STREAM", 1)


async def test_unanswered_publishes_expire_while_answered_ones_resolve(
    nc: NatsClient, layout_env: dict
) -> None:
    """One expiry timer for all: a publish nobody acknowledges fails after `timeout`, every time."""
    _, layout = await laid_out(nc, layout_env)
    silent = await nc.subscribe(f"{layout.prefix}.silent.>")  # listens, never answers: no 503 either
    publisher = AckPublisher(nc, timeout=0.3)
    first = await publisher.submit(f"{layout.prefix}.request.1", b"{}")
    lost = await publisher.submit(f"{layout.prefix}.silent.a", b"x")
    second = await publisher.submit(f"{layout.prefix}.request.2", b"{}")
    assert (await first).status is PubStatus.STORED and (await second).status is PubStatus.STORED
    result = await asyncio.wait_for(lost, timeout=3)
    assert result.status is PubStatus.FAILED and result.error == "no acknowledgement within 0.3s"
    again = await asyncio.wait_for(await publisher.submit(f"{layout.prefix}.silent.b", b"y"), timeout=3)
    assert again.status is PubStatus.FAILED  # the timer re-arms after the queue drained
    await publisher.close()
    await silent.unsubscribe()
