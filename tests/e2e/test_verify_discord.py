"""`producer verify` as the runbook's step 7, with real processes: workers republish, the publisher-discord
double posts each event to the Discord double (which keeps the channel's history), and the installed
`producer verify` reads the evidence back, from the channel (`--source discord`) or from
publisher-discord's metrics table (`--source metrics`), stock and fixed."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from backfill_doubles.discord import SlidingWindow
from backfill_doubles.discord_metrics import PostgresRecorder
from backfill_doubles.publisher_discord import PublisherDiscord, build_embed
from backfill_doubles.stack import (
    DISCORD_BOT_TOKEN,
    DISCORD_CHANNEL,
    DISCORD_WEBHOOK_ID,
    DISCORD_WEBHOOK_TOKEN,
    EmbeddedStack,
    StackOptions,
)
from tests.e2e.conftest import Envelopes, run_cli
from tests.e2e.processes import WorkerProcess, eventually

pytestmark = pytest.mark.slow
RUN = "e2e-verify"  # a run id without a time: the window comes from the rows' backfill_published_at
LONG_TITLE = "An Extremely Long Title " * 12  # "Published: " + it is over Discord's 256: the embed is refused


@pytest.fixture
def small_stack(nats_url: str) -> Iterator[EmbeddedStack]:
    """26 rows (2 of each kind), publisher-discord's table installed, Discord's webhook limits opened
    wide so only what Discord refuses for good goes missing."""
    with EmbeddedStack(StackOptions(size=26, nats_url=nats_url, discord_metrics=True)) as stack:
        stack.discord.webhook_window = SlidingWindow(1000, 2.0)
        stack.discord.channel_window = SlidingWindow(1000, 60.0)
        yield stack


async def backfill(
    stack: EmbeddedStack,
    envelopes: Envelopes,
    run_id: str,
    *select: str,
    publisher: PublisherDiscord,
    layout: dict[str, str],
) -> None:
    """Enqueue, run a worker to the end, and let publisher-discord post every event it received
    (`layout`: stream, consumer and ledger names of this test alone: the ledger remembers rows' events)."""
    env = stack.env(**layout)
    before = len(envelopes.seen)
    await publisher.start(stack.nats_url)
    ran = await run_cli("producer", ["enqueue", *(select or ("--all-missing",)), "--run-id", run_id], env)
    assert ran.code == 0, ran.stderr
    worker = await WorkerProcess(env, "--exit-when-idle", "2").start()
    assert await worker.wait() == 0, worker.stderr[-3000:]
    await eventually(
        lambda: publisher.received == len(envelopes.seen) - before > 0, what="every event handled"
    )
    await publisher.close()


async def verify(stack: EmbeddedStack, *args: str, **env: str) -> tuple[int, dict[str, Any], str]:
    ran = await run_cli("producer", ["verify", *args, "--json"], stack.env(**env))
    return ran.code, (json.loads(ran.stdout) if ran.stdout else {}), ran.stderr


def by_row(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {row["row_id"]: row for row in report["rows"]}


def add_row(stack: EmbeddedStack, title: str, *, ticks: int | None, image: bool, path: str) -> int:
    item = stack.jellyfin.add_item(title, run_time_ticks=ticks, image=image)
    row = stack.catalog.add_row(
        title=title, status="published", content_url=f"s3://outputs/{path}", namespace="pmoves",
        meta={"jellyfin_item_id": item["Id"], "tags": ["studio"]},
    )  # fmt: skip
    return int(row["id"])


def live_embed(stack: EmbeddedStack, row_id: int, *, at: float, **extra: Any) -> None:
    """An embed as publisher-discord posted it for an event with the row's title and artifact (unless
    `extra` says otherwise), by the same webhook at `at`."""
    row = stack.catalog.rows[row_id]
    payload = {"title": row["title"], "artifact_uri": row["content_url"], "namespace": "pmoves", **extra}
    stack.discord.history.add_message(
        DISCORD_CHANNEL, {"embeds": [build_embed(payload)]}, webhook_id=DISCORD_WEBHOOK_ID, at=at
    )


@pytest.fixture
async def envelopes(small_stack: EmbeddedStack) -> AsyncIterator[Envelopes]:
    """What Agent Zero publishes while the test runs (core NATS: subscribed before anything is sent)."""
    collected = Envelopes()
    nc = await nats.connect(small_stack.nats_url)
    await nc.subscribe("content.published.v1", cb=collector(collected))
    await nc.flush()
    yield collected
    await nc.close()


async def test_verify_reads_every_republished_row_from_the_channel(
    small_stack: EmbeddedStack, envelopes: Envelopes, layout_env: dict[str, str]
) -> None:
    """Delivered once, the refused embed not seen, the duplicate counted twice; the row's months-old live
    embed and a lookalike in the window left out; embeds judged against what the item has."""
    stack = small_stack
    long_row = add_row(stack, LONG_TITLE.strip(), ticks=600_000_000, image=True, path="long/clip.mp4")
    photo_row = add_row(stack, "A Still Photo", ticks=None, image=False, path="stills/photo.mp4")
    republished = [rid for rid, seed in stack.rows.items() if seed.expect == "republished"]
    target = republished[0]
    live_embed(stack, target, at=time.time() - 90 * 86400)  # its live embed, months ago
    lookalike = {
        "jellyfin_item_id": "f" * 32,
        "jellyfin_public_url": "https://watch.example.org/web/#/details?id=f",
    }
    live_embed(
        stack,
        target,
        at=time.time(),
        artifact_uri="s3://outputs/other/clip.mp4",
        tags=["backfill"],
        **lookalike,
    )
    await backfill(
        stack, envelopes, RUN, publisher=PublisherDiscord(stack.discord_webhook), layout=layout_env
    )
    duplicate = next(
        e for e in envelopes.seen if e["payload"]["artifact_uri"] == stack.catalog.rows[target]["content_url"]
    )
    again = PublisherDiscord(stack.discord_webhook)  # the event published twice (the duplicate window)
    await again.start(stack.nats_url)
    nc = await nats.connect(stack.nats_url)
    await nc.publish("content.published.v1", json.dumps(duplicate).encode())
    await nc.close()
    await eventually(lambda: again.received == 1, what="the duplicate handled")
    await again.close()

    code, report, stderr = await verify(stack, "--source", "discord", "--run-id", RUN)
    assert code == 1, stderr  # a row not delivered, a row delivered twice
    assert f"reading the Discord channel {DISCORD_CHANNEL}" in stderr
    assert (report["source"], report["origin"]) == ("discord", DISCORD_CHANNEL)
    rows = by_row(report)
    assert set(rows) == {*republished, long_row, photo_row}
    assert (rows[long_row]["delivery"], rows[long_row]["embeds_seen"]) == ("not_seen", 0)
    assert (rows[target]["delivery"], rows[target]["embeds_seen"]) == ("delivered", 2)
    others = [rows[rid] for rid in [*republished, photo_row] if rid != target]
    assert all((r["delivery"], r["embeds_seen"]) == ("delivered", 1) for r in others)
    assert rows[photo_row]["embed_verdict"] == "complete_as_item_allows"
    assert rows[photo_row]["item_lacks"] == ["duration", "thumbnail"]
    no_thumb = [rid for rid, seed in stack.rows.items() if seed.kind == "no_thumb"]
    assert all(rows[rid]["embed_verdict"] == "complete_as_item_allows" for rid in no_thumb)
    complete = [rid for rid in republished if rid not in no_thumb]
    assert all(rows[rid]["embed_verdict"] == "complete" for rid in complete)
    totals = report["totals"]
    assert (totals["delivered"], totals["not_seen"], totals["duplicated"], totals["embed_incomplete"]) == (
        len(republished) + 1,
        1,
        1,
        0,
    )
    text = await run_cli("producer", ["verify", "--run-id", RUN], stack.env())  # --source by default
    assert "DUPLICATE" in text.stdout and text.code == 1
    assert DISCORD_BOT_TOKEN not in text.stdout + text.stderr and DISCORD_WEBHOOK_TOKEN not in text.stderr

    # The same run through publisher-discord's table: the stock double recorded nothing
    code, report, stderr = await verify(stack, "--source", "metrics", "--run-id", RUN)
    assert code == 1 and report["recording"] is False
    assert {r["delivery"] for r in report["rows"]} == {"not_seen"}
    text = await run_cli("producer", ["verify", "--source", "metrics", "--run-id", RUN], stack.env())
    assert "has recorded nothing in publisher_discord_metrics since the run began" in text.stdout


def seed_delivered(stack: EmbeddedStack, n: int, filler: int) -> list[int]:
    """`n` rows as a run left them, their embeds in the channel among `filler` other webhook messages."""
    now = time.time()
    ids = []
    for i in range(n):
        item = "%032x" % (i + 1)
        link = f"https://watch.example.org/web/#/details?id={item}"
        meta = {
            "jellyfin_item_id": item, "jellyfin_public_url": link, "duration": 60.0, "backfill_item_lacks": [],
            "thumbnail_url": f"https://watch.example.org/Items/{item}/Images/Primary", "backfill_run_id": RUN,
            "backfill_event_id": f"ev-{i}", "backfill_published_at": "2026-01-01T00:00:00Z",
        }  # fmt: skip
        row = stack.catalog.add_row(
            title=f"Seeded {i}", status="published", content_url=f"s3://outputs/s/{i}.mp4", meta=meta
        )
        ids.append(int(row["id"]))
        payload = {**meta, "title": f"Seeded {i}", "artifact_uri": row["content_url"], "tags": ["backfill"]}
        stack.discord.history.add_message(
            DISCORD_CHANNEL,
            {"embeds": [build_embed(payload)]},
            webhook_id=DISCORD_WEBHOOK_ID,
            at=now - 60 + i,
        )
    for i in range(filler):
        stack.discord.history.add_message(
            DISCORD_CHANNEL, {"content": f"chatter {i}"}, webhook_id=DISCORD_WEBHOOK_ID, at=now - 30 + i / 100
        )
    return ids


async def test_under_429s_verify_finishes_without_breaking_the_limits(small_stack: EmbeddedStack) -> None:
    """A bucket of 2 reads per 0.5 s and two forced 429s over four pages: every row found, no 429
    beyond the forced ones, one request at a time."""
    stack = small_stack
    history = stack.discord.history
    ids = seed_delivered(stack, 5, 330)
    history.bucket_limit, history.bucket_seconds, history.latency = 2, 0.5, 0.01
    history.force_429, history.forced_retry_after = 2, 0.3
    code, report, stderr = await verify(
        stack, "--source", "discord", "--run-id", RUN, "--since", "2026-01-01T00:00:00Z"
    )
    assert code == 0, stderr
    assert [by_row(report)[rid]["delivery"] for rid in ids] == ["delivered"] * 5
    assert history.limited == 2 and history.in_flight_max == 1
    assert history.statuses[200] == 1 + 4  # the webhook, then 335 messages in four pages of at most 100
    assert "reading the Discord channel" in stderr


@pytest.mark.parametrize(
    ("env", "code", "says"),
    [
        ({"DISCORD_BOT_TOKEN": "not-the-bot"}, 3, ["401", "DISCORD_BOT_TOKEN"]),
        ({}, 3, ["403", "Missing Access", "View Channel", "Read Message History"]),
        ({"DISCORD_CHANNEL_ID": "999"}, 4, ["404", "Unknown Channel", "DISCORD_CHANNEL_ID"]),
    ],
)
async def test_a_missing_permission_or_channel_is_one_clear_error(
    small_stack: EmbeddedStack, env: dict[str, str], code: int, says: list[str]
) -> None:
    """One answer from Discord, no retry, nothing on stdout, one message saying what to fix."""
    stack = small_stack
    seed_delivered(stack, 2, 0)
    stack.discord.history.add_bot(DISCORD_BOT_TOKEN, DISCORD_CHANNEL, ())  # in the guild, not in the channel
    ran = await run_cli("producer", ["verify", "--source", "discord", "--run-id", RUN], stack.env(**env))
    assert ran.code == code, ran.stderr
    assert ran.stdout == ""
    errors = [line for line in ran.stderr.splitlines() if line.startswith("producer: discord")]
    assert len(errors) == 1 and all(part in errors[0] for part in says), ran.stderr
    reads = sum(n for status, n in stack.discord.history.statuses.items() if status != 200)
    assert reads == 1  # the webhook's lookup (200) aside, one refused read, never retried
    assert DISCORD_BOT_TOKEN not in ran.stderr and DISCORD_WEBHOOK_TOKEN not in ran.stderr


@pytest.fixture
def postgres_stack(nats_url: str) -> Iterator[EmbeddedStack]:
    """The catalog on a real PostgreSQL with publisher-discord's table from the shipped DDL."""
    options = StackOptions(size=26, nats_url=nats_url, catalog="postgres", discord_metrics=True)
    with EmbeddedStack(options) as stack:
        stack.discord.webhook_window = SlidingWindow(1000, 2.0)
        stack.discord.channel_window = SlidingWindow(1000, 60.0)
        yield stack


async def test_the_metrics_table_says_nothing_recorded_on_a_stock_stack_and_agrees_once_fixed(
    postgres_stack: EmbeddedStack, layout_env: dict[str, str]
) -> None:
    """Stock publisher-discord (no `supabase` package): the shipped table stays empty and verify says it
    is not recording. With the dependency (the double recording into the shipped DDL), the table's
    verdicts are the channel's, row by row."""
    stack = postgres_stack
    envelopes = Envelopes()
    nc = await nats.connect(stack.nats_url)
    await nc.subscribe("content.published.v1", cb=collector(envelopes))
    await nc.flush()
    republished = sorted(rid for rid, seed in stack.rows.items() if seed.expect == "republished")
    stock, fixed = republished[: len(republished) // 2], republished[len(republished) // 2 :]
    ids = lambda rows: ["--ids", ",".join(map(str, rows))]  # noqa: E731 - a short local helper
    await backfill(
        stack,
        envelopes,
        "run-stock",
        *ids(stock),
        publisher=PublisherDiscord(stack.discord_webhook),
        layout=layout_env,
    )
    code, report, _ = await verify(stack, "--source", "metrics", "--run-id", "run-stock")
    assert (code, report["recording"]) == (1, False)
    assert all(r["delivery"] == "not_seen" for r in report["rows"])
    dsn = stack.postgres_dsn
    assert dsn is not None
    publisher = PublisherDiscord(stack.discord_webhook, recorder=PostgresRecorder(dsn))
    await backfill(stack, envelopes, "run-fixed", *ids(fixed), publisher=publisher, layout=layout_env)
    assert publisher.record_errors == []
    await nc.close()
    code, table, stderr = await verify(stack, "--source", "metrics", "--run-id", "run-fixed")
    assert code == 0, stderr
    code, channel, stderr = await verify(stack, "--source", "discord", "--run-id", "run-fixed")
    assert code == 0, stderr
    assert {r["row_id"]: r["delivery"] for r in table["rows"]} == {
        r["row_id"]: r["delivery"] for r in channel["rows"]
    }
    assert sorted(by_row(table)) == fixed and table["recording"] is None


def collector(envelopes: Envelopes) -> Callable[[Msg], Awaitable[None]]:
    async def collect(msg: Msg) -> None:
        envelopes.seen.append(json.loads(msg.data))

    return collect


async def test_a_run_with_no_republished_rows_reads_nothing_from_discord(small_stack: EmbeddedStack) -> None:
    """Nothing to look for: no request to Discord beyond the webhook's, an empty report, exit 0."""
    code, report, stderr = await verify(small_stack, "--source", "discord", "--run-id", "no-such-run")
    assert code == 0, stderr
    assert report["rows"] == [] and "no republished rows match" in stderr
    assert small_stack.discord.history.reads == 0


async def test_the_discord_source_without_a_bot_token_is_a_configuration_error(
    small_stack: EmbeddedStack,
) -> None:
    ran = await run_cli(
        "producer", ["verify", "--source", "discord", "--run-id", RUN], small_stack.env(DISCORD_BOT_TOKEN="")
    )
    assert (ran.code, ran.stdout) == (2, "")
    assert "DISCORD_BOT_TOKEN" in ran.stderr and small_stack.discord.history.statuses == {}
