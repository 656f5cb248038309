"""Delivery guarantees with real worker processes: crashes, outages, bad input, shutdown, dead letters."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from backfill.core.deadletter import header_value
from backfill.core.payload import correlation_id
from backfill.core.wire import Mode, encode_request, new_request, request_subject
from backfill_doubles.natsserver import NatsServerProcess
from backfill_doubles.stack import EmbeddedStack, StackOptions
from tests.e2e.conftest import Envelopes, run_cli
from tests.e2e.processes import WorkerProcess, consumer_state, eventually
from tests.e2e.test_pipeline import read_stream

pytestmark = pytest.mark.slow
VERSION = "2025-10-14"


def enriched(stack: EmbeddedStack) -> int:
    return sum(1 for r in stack.catalog.rows.values() if (r["meta"] or {}).get("backfill_version"))


def resolvable(stack: EmbeddedStack) -> list[int]:
    return [rid for rid, r in stack.rows.items() if r.expect == "republished"]


async def enqueue(stack: EmbeddedStack, env: dict[str, str], *args: str) -> None:
    selection = [] if "--ids" in args else ["--all-missing"]
    ran = await run_cli("producer", ["enqueue", *selection, *args], env)
    assert ran.code == 0, ran.stderr


async def dlq_reasons(stack: EmbeddedStack, layout_env: dict[str, str]) -> Counter[str]:
    dead = await read_stream(stack.nats_url, layout_env["BACKFILL_DLQ_STREAM"])
    return Counter(m.headers["Backfill-Reason"] for m in dead)


async def test_sigkill_mid_batch_loses_nothing_and_publishes_nothing_twice(
    stack: EmbeddedStack, envelopes: Envelopes, layout_env: dict[str, str]
) -> None:
    """A worker killed mid-batch: its messages are redelivered, every row ends enriched; what the dead
    worker had published was recorded by the survivor's envelope watch, so no row gets a second event."""
    env = stack.env(**layout_env, BACKFILL_ACK_WAIT="3")
    stack.agent.latency = 0.05
    await enqueue(stack, env)
    victim = await WorkerProcess(env, "--concurrency", "8").start()
    survivor = await WorkerProcess(env, "--concurrency", "8", "--exit-when-idle", "3").start()
    await eventually(lambda: enriched(stack) >= 40, what="some rows done before the kill")
    victim.kill()
    await victim.wait()
    assert await survivor.wait() == 0, survivor.stderr[-3000:]
    assert enriched(stack) == len(resolvable(stack))
    counts = Counter(e["correlation_id"] for e in envelopes.seen)
    assert all(counts[correlation_id(rid, VERSION)] >= 1 for rid in resolvable(stack))
    duplicated = [cid for cid, n in counts.items() if n > 1]
    assert duplicated == []
    assert await read_stream(stack.nats_url, layout_env["BACKFILL_STREAM"]) == []


async def test_flaky_jellyfin_delays_rows_but_dead_letters_none(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """30 % of Jellyfin calls answer 500 and some hang past the timeout: every row still gets done
    within the default 10 deliveries (a row needing a lookup and a search once failed half of them)."""
    stack.jellyfin.fail_rate = 0.3
    stack.jellyfin.hang_rate, stack.jellyfin.hang_seconds = 0.03, 5.0
    env = stack.env(**layout_env, BACKFILL_HTTP_TIMEOUT="1")
    await enqueue(stack, env, "--mode", "metadata-only")
    workers = [await WorkerProcess(env, "--exit-when-idle", "3").start() for _ in range(2)]
    assert [await w.wait(180) for w in workers] == [0, 0]
    assert stack.jellyfin.injected["fail"] > 20
    assert enriched(stack) == len(resolvable(stack))
    reasons = await dlq_reasons(stack, layout_env)
    assert "retries_exhausted" not in reasons
    assert sum(reasons.values()) == sum(1 for r in stack.rows.values() if r.expect.startswith("dlq:"))


async def test_deleted_item_dead_letters_then_replay_finishes_the_row(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """jellyfin_not_found lands in the dead letters; after the item is back, replay finishes the row."""
    env = stack.env(**layout_env)
    await enqueue(stack, env, "--mode", "metadata-only")
    worker = await WorkerProcess(env, "--exit-when-idle", "2").start()
    assert await worker.wait() == 0
    listed = await run_cli("producer", ["dlq", "list", "--reason", "jellyfin_not_found", "--jsonl"], env)
    entries = listed.json_lines()
    deleted_rows = {rid for rid, r in stack.rows.items() if r.kind == "deleted"}
    assert {e["row_id"] for e in entries} == deleted_rows, (listed.stderr, listed.stdout[:500])
    shown = await run_cli("producer", ["dlq", "show", str(entries[0]["seq"])], env)
    assert '"Backfill-Reason": "jellyfin_not_found"' in shown.stdout
    for rid in deleted_rows:  # the operator restores the items in Jellyfin
        stack.jellyfin.add_item(stack.rows[rid].title, run_time_ticks=50_000_000)
    dry = await run_cli(
        "producer", ["dlq", "replay", "--reason", "jellyfin_not_found", "--dry-run", "--json"], env
    )
    assert dry.json_lines()[-1]["replayed"] == len(deleted_rows)
    assert len((await run_cli("producer", ["dlq", "list", "--jsonl"], env)).json_lines()) > len(deleted_rows)
    replay = await run_cli("producer", ["dlq", "replay", "--reason", "jellyfin_not_found", "--json"], env)
    assert replay.code == 0, replay.stderr
    assert replay.json_lines()[-1]["replayed"] == len(deleted_rows)
    worker = await WorkerProcess(env, "--exit-when-idle", "2").start()
    assert await worker.wait() == 0
    for rid in deleted_rows:
        assert stack.catalog.rows[rid]["meta"]["backfill_version"] == VERSION
    assert "jellyfin_not_found" not in await dlq_reasons(stack, layout_env)
    purge = await run_cli("producer", ["dlq", "purge", "--reason", "invalid_payload"], env)
    assert purge.code == 2  # refuses without --yes
    purge = await run_cli("producer", ["dlq", "purge", "--reason", "invalid_payload", "--yes"], env)
    assert purge.code == 0
    assert "invalid_payload" not in await dlq_reasons(stack, layout_env)


async def test_garbage_on_a_request_subject_is_dead_lettered_with_its_bytes(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """Undecodable bytes: dead letter invalid_message with the raw bytes; the worker keeps going."""
    env = stack.env(**layout_env)
    await enqueue(stack, env, "--mode", "metadata-only", "--limit", "20")
    nc = await nats.connect(stack.nats_url)
    garbage = b"\xff\xfe not a request \x00"
    await nc.jetstream().publish(f"{layout_env['BACKFILL_SUBJECT_PREFIX']}.request.777777", garbage)
    await nc.drain()
    worker = await WorkerProcess(env, "--exit-when-idle", "2").start()
    assert await worker.wait() == 0
    dead = await read_stream(stack.nats_url, layout_env["BACKFILL_DLQ_STREAM"])
    (bad,) = [m for m in dead if m.headers["Backfill-Reason"] == "invalid_message"]
    assert bad.data == garbage
    assert bad.headers["Backfill-Row-Id"] == "777777"
    assert enriched(stack) > 5


async def test_time_waiting_in_the_queue_does_not_count_against_the_retry_budget(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """Requests enqueued two hours ago (a paced run's queue wait) meet transient Jellyfin faults with a
    60 s budget: they are retried and enriched, not dead-lettered by their first 500."""
    env = stack.env(**layout_env, BACKFILL_RETRY_BUDGET_SECONDS="60")
    first, *waited = resolvable(stack)[:11]
    await enqueue(stack, env, "--ids", str(first), "--mode", "metadata-only")  # lays the streams out
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    nc = await nats.connect(stack.nats_url)
    for row_id in waited:
        request = new_request(row_id, VERSION, Mode.METADATA_ONLY, "old-run", now=two_hours_ago)
        await nc.jetstream().publish(
            request_subject(layout_env["BACKFILL_SUBJECT_PREFIX"], row_id), encode_request(request)
        )
    await nc.drain()
    stack.jellyfin.fail_next = 3
    worker = await WorkerProcess(env, "--exit-when-idle", "3").start()
    assert await worker.wait() == 0, worker.stderr[-3000:]
    assert stack.jellyfin.injected, "the faults under test were not injected"
    assert await dlq_reasons(stack, layout_env) == Counter()
    assert all(stack.catalog.rows[row_id]["meta"].get("backfill_version") for row_id in [first, *waited])


async def test_poison_subjects_and_ids_are_dead_lettered_and_hurt_no_neighbour(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """A Unicode-digit id token (`"²".isdigit()` is true, `int("²")` raises) and a row id beyond bigint:
    both are `invalid_message` dead letters with their bytes; every other row is enriched, the worker
    exits 0 and `producer dlq list --json` reads them."""
    env = stack.env(**layout_env)
    prefix = layout_env["BACKFILL_SUBJECT_PREFIX"]
    await enqueue(stack, env, "--mode", "metadata-only")
    too_big = 2**63
    poison = {
        f"{prefix}.request.\u00b2": encode_request(new_request(2, VERSION, Mode.METADATA_ONLY, "poison")),
        f"{prefix}.request.{too_big}": json.dumps(
            {
                "row_id": too_big,
                "backfill_version": VERSION,
                "mode": "metadata-only",
                "run_id": "p",
                "enqueued_at": "2025-01-01T00:00:00Z",
            }
        ).encode(),
    }
    nc = await nats.connect(stack.nats_url)
    for subject, body in poison.items():
        await nc.jetstream().publish(subject, body)
    await nc.drain()
    worker = await WorkerProcess(env, "--exit-when-idle", "2", "--fetch-batch", "40").start()
    assert await worker.wait() == 0, worker.stderr[-3000:]
    dead = await read_stream(stack.nats_url, layout_env["BACKFILL_DLQ_STREAM"])
    invalid = {
        m.headers["Backfill-Original-Subject"]: m
        for m in dead
        if m.headers["Backfill-Reason"] == "invalid_message"
    }
    assert set(invalid) == {header_value(subject) for subject in poison}  # headers stay ASCII
    assert all(invalid[header_value(subject)].data == body for subject, body in poison.items())
    assert all("Backfill-Row-Id" not in m.headers for m in invalid.values())
    assert enriched(stack) == len([r for r in stack.rows.values() if r.expect in ("republished",)])
    listed = await run_cli("producer", ["dlq", "list", "--json"], env)
    assert listed.code == 0, listed.stderr
    rows = json.loads(listed.stdout)["dead_letters"]
    assert {r["row_id"] for r in rows if r["reason"] == "invalid_message"} == {None}


async def test_sigterm_under_load_exits_zero_and_leaves_nothing_waiting_for_ack_wait(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """SIGTERM: in-flight work finishes or is nak'd at once; exit 0 within the grace period."""
    env = stack.env(**layout_env, WORKER_GRACE_SECONDS="2", BACKFILL_ACK_WAIT="120")
    stack.agent.latency = 0.5
    await enqueue(stack, env)
    worker = await WorkerProcess(env, "--concurrency", "16").start()
    await eventually(lambda: len(stack.agent.envelopes) >= 10, what="work under way")
    started = asyncio.get_running_loop().time()
    worker.terminate()
    assert await worker.wait(30) == 0, worker.stderr[-3000:]
    assert asyncio.get_running_loop().time() - started < 2 + 3
    pending, ack_pending = await consumer_state(
        stack.nats_url, layout_env["BACKFILL_STREAM"], layout_env["BACKFILL_CONSUMER"]
    )
    assert ack_pending == 0
    assert pending > 0  # the rest waits for the next worker, not for ack_wait


async def test_message_whose_worker_dies_on_every_delivery_is_swept(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """Killed on every delivery until max_deliver: a later worker sweeps it into the dead letters."""
    env = stack.env(**layout_env, BACKFILL_MAX_DELIVER="2", BACKFILL_ACK_WAIT="2", BACKFILL_HTTP_TIMEOUT="30")
    row_id = resolvable(stack)[0]
    await enqueue(stack, env, "--ids", str(row_id))
    stack.jellyfin.hang_rate, stack.jellyfin.hang_seconds = 1.0, 60.0
    for delivery in (1, 2):
        before = len(stack.jellyfin.requests)
        worker = await WorkerProcess(env).start()
        await eventually(
            lambda b=before: len(stack.jellyfin.requests) > b, what=f"delivery {delivery} started"
        )
        worker.kill()
        await worker.wait()
    stack.jellyfin.hang_rate = 0.0
    sweeper = await WorkerProcess(env).start()
    await eventually(lambda: _has_reason(stack, layout_env, "retries_exhausted"), what="swept", timeout=30)
    sweeper.terminate()
    assert await sweeper.wait() == 0
    assert await read_stream(stack.nats_url, layout_env["BACKFILL_STREAM"]) == []
    again = await run_cli("producer", ["enqueue", "--ids", str(row_id), "--json"], env)
    assert again.json_lines()[-1]["enqueued"] == 1  # the row is no longer blocked


async def _has_reason(stack: EmbeddedStack, layout_env: dict[str, str], reason: str) -> bool:
    return reason in await dlq_reasons(stack, layout_env)


async def test_nats_restart_mid_run_completes_with_nothing_lost(
    contracts_dir: Path, layout_env: dict[str, str], tmp_path: Path
) -> None:
    """nats-server (file store) restarted mid-run: workers reconnect and finish every row."""
    server = NatsServerProcess(store=tmp_path / "js")
    server.start()
    try:
        with EmbeddedStack(StackOptions(size=130, nats_url=server.url, contracts_dir=contracts_dir)) as stack:
            stack.agent.latency = 0.05
            env = stack.env(**layout_env, BACKFILL_ACK_WAIT="5")
            await enqueue(stack, env, "--mode", "metadata-only")
            workers = [await WorkerProcess(env, "--exit-when-idle", "3").start() for _ in range(2)]
            await eventually(lambda: enriched(stack) >= 10, what="some rows done before the restart")
            server.stop()
            await asyncio.sleep(1.0)  # the outage itself: the thing under test, not a wait for a result
            server.start()
            assert [await w.wait(120) for w in workers] == [0, 0]
            assert enriched(stack) == len(resolvable(stack))
    finally:
        server.close()


async def _stream_leader(url: str, stream: str) -> str | None:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return info.cluster.leader if info.cluster else None
    except Exception:
        return None
    finally:
        await nc.close()


async def test_killing_the_stream_leader_of_a_three_node_cluster_loses_and_duplicates_nothing(
    contracts_dir: Path, layout_env: dict[str, str]
) -> None:
    """R3 stream on a 3-node cluster: SIGKILL the leader mid-run; every row done, one event each."""
    from tests.e2e.cluster import NatsCluster

    cluster = NatsCluster()
    cluster.start()
    try:
        steady = cluster.nodes["n3"]  # Agent Zero and the listener stay on a node that survives
        await eventually(lambda: _cluster_ready(steady.url), what="cluster has a meta leader", timeout=30)
        with EmbeddedStack(StackOptions(size=130, nats_url=steady.url, contracts_dir=contracts_dir)) as stack:
            env = stack.env(
                **layout_env, NATS_URL=cluster.urls, BACKFILL_STREAM_REPLICAS="3", BACKFILL_ACK_WAIT="5"
            )
            seen: list[bytes] = []
            nc = await nats.connect(steady.url)

            async def on_envelope(msg: Msg) -> None:
                seen.append(msg.data)

            await nc.subscribe("content.published.v1", cb=on_envelope)
            await nc.flush()
            stack.agent.latency = 0.05
            await enqueue(stack, env)
            stream = layout_env["BACKFILL_STREAM"]
            while (leader := await _stream_leader(steady.url, stream)) in (None, "n3"):
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
                await eventually(lambda: _leader_elected(steady.url, stream), what="new leader", timeout=15)
            workers = [await WorkerProcess(env, "--exit-when-idle", "4").start() for _ in range(2)]
            await eventually(lambda: enriched(stack) >= 15, what="some rows done before the leader dies")
            cluster.nodes[str(leader)].stop(kill=True)
            assert [await w.wait(150) for w in workers] == [0, 0], [w.stderr[-2000:] for w in workers]
            assert enriched(stack) == len(resolvable(stack))
            await nc.flush()
            counts = Counter(json.loads(d)["correlation_id"] for d in seen)
            assert sorted(counts.values()) == [1] * len(resolvable(stack))
            await nc.drain()
    finally:
        cluster.close()


async def _cluster_ready(url: str) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
    except Exception:
        return False
    try:
        info = await nc.jetstream().account_info()
        return info is not None
    except Exception:
        return False
    finally:
        await nc.close()


async def _leader_elected(url: str, stream: str) -> bool:
    return await _stream_leader(url, stream) is not None


async def test_slow_messages_are_kept_alive_by_heartbeats_not_redelivered(
    stack: EmbeddedStack, envelopes: Envelopes, layout_env: dict[str, str]
) -> None:
    """Each message takes longer than ack_wait: in_progress heartbeats prevent a second delivery."""
    env = stack.env(**layout_env, BACKFILL_ACK_WAIT="1.5", BACKFILL_HTTP_TIMEOUT="10")
    stack.agent.latency = 4.0
    await enqueue(stack, env, "--limit", "4")
    worker = await WorkerProcess(env, "--exit-when-idle", "2").start()
    assert await worker.wait(60) == 0
    counts = Counter(e["correlation_id"] for e in envelopes.seen)
    assert sum(counts.values()) == len(counts) > 0  # one event per row, none repeated


async def test_a_failing_dead_letter_publish_keeps_the_original(
    stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """With the dead-letter stream gone the original is nak'd, never dropped; it lands once the stream is back."""
    env = stack.env(**layout_env)
    worker = await WorkerProcess(env).start()
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    dlq, stream = layout_env["BACKFILL_DLQ_STREAM"], layout_env["BACKFILL_STREAM"]
    await eventually(lambda: _stream_exists(js, dlq), what="worker created the layout")
    dlq_config = (await js.stream_info(dlq)).config
    await js.delete_stream(dlq)
    row_id = next(rid for rid, r in stack.rows.items() if r.kind == "non_s3")
    request = new_request(
        row_id, VERSION, Mode.METADATA_ONLY, "run-test"
    )  # the producer would recreate the DLQ
    await js.publish(request_subject(layout_env["BACKFILL_SUBJECT_PREFIX"], row_id), encode_request(request))
    await eventually(lambda: len(stack.jellyfin.requests) > 0, what="row handled")
    await asyncio.sleep(2)  # the outage under test: dead-letter publishes fail (and nak) during it
    assert (await js.stream_info(stream)).state.messages == 1  # still there, not dropped
    await js.add_stream(dlq_config)
    await eventually(
        lambda: _stream_empty(js, stream), what="dead-lettered once the stream is back", timeout=30
    )
    assert (await js.stream_info(dlq)).state.messages == 1
    worker.terminate()
    assert await worker.wait() == 0
    await nc.drain()


async def _stream_exists(js: Any, name: str) -> bool:
    try:
        await js.stream_info(name)
        return True
    except Exception:
        return False


async def _stream_empty(js: Any, name: str) -> bool:
    return (await js.stream_info(name)).state.messages == 0
