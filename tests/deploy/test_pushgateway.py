"""`push_counts` against a loopback HTTP server that answers like a Prometheus Pushgateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from backfill.adapters.pushgateway import RESULTS, push_counts, push_paused
from backfill.core.errors import UpstreamRejected, UpstreamUnavailable
from backfill_doubles.natsserver import free_port

COUNTS = {"candidates": 220, "enqueued": 200, "already_pending": 15, "failed": 5, "not_candidates": 3}


@dataclass
class Gateway:
    """What the loopback Pushgateway received, and what it answers next."""

    url: str = ""
    status: int = 200
    hold: asyncio.Event | None = None  # when set, requests wait for it (to provoke client timeouts)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, body

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        (_, _, body) = self.requests[-1]
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    state = Gateway()

    async def push(request: web.Request) -> web.Response:
        state.requests.append((request.method, request.path, await request.text()))
        if state.hold is not None:
            await state.hold.wait()
        return web.Response(status=state.status)

    app = web.Application()
    app.router.add_route("*", "/metrics/{tail:.*}", push)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    state.url = f"http://127.0.0.1:{port}"
    yield state
    if state.hold is not None:
        state.hold.set()
    await runner.cleanup()


async def test_push_posts_rows_by_result_and_run_timestamp_to_the_job_group(gateway: Gateway) -> None:
    """One POST to /metrics/job/<job> (no run-id group) with every result count and the run's end time."""
    await push_counts(gateway.url, "backfill-producer", "run-42", COUNTS, clock=lambda: 1_760_000_000.0)
    assert [(m, p) for m, p, _ in gateway.requests] == [("POST", "/metrics/job/backfill-producer")]
    samples = gateway.samples()
    for result in RESULTS:
        assert samples[("backfill_producer_rows", (("result", result),))] == COUNTS[result]
    assert samples[("backfill_producer_last_run_timestamp_seconds", (("run_id", "run-42"),))] == 1.76e9
    assert len(samples) == len(RESULTS) + 1


async def test_push_accepts_the_enqueue_summary_and_reports_missing_results_as_zero(
    gateway: Gateway,
) -> None:
    """Extra keys (failed_ids, mode) are ignored, a missing result is pushed as 0, host:port means http."""
    summary: dict[str, object] = {"enqueued": 7, "failed_ids": [1, 2], "mode": "republish"}
    await push_counts(f"127.0.0.1:{gateway.url.rsplit(':', 1)[1]}", "nightly", "run-1", summary)
    assert gateway.requests[0][1] == "/metrics/job/nightly"
    samples = gateway.samples()
    assert samples[("backfill_producer_rows", (("result", "enqueued"),))] == 7
    assert samples[("backfill_producer_rows", (("result", "failed"),))] == 0


async def test_push_builds_each_run_on_a_registry_from_the_factory(gateway: Gateway) -> None:
    """Every push uses a fresh registry from `registry_factory`, so runs never leak into each other."""
    made: list[CollectorRegistry] = []

    def factory() -> CollectorRegistry:
        made.append(CollectorRegistry())
        return made[-1]

    await push_counts(gateway.url, "j", "run-a", COUNTS, registry_factory=factory)
    await push_counts(gateway.url, "j", "run-b", COUNTS, registry_factory=factory)
    assert len(made) == 2 and made[0] is not made[1]
    assert (
        made[1].get_sample_value("backfill_producer_last_run_timestamp_seconds", {"run_id": "run-a"}) is None
    )
    assert ("backfill_producer_last_run_timestamp_seconds", (("run_id", "run-b"),)) in gateway.samples()


async def test_push_refuses_a_count_that_is_not_an_integer(gateway: Gateway) -> None:
    """A non-integer count is a programming error, caught before anything is sent."""
    with pytest.raises(TypeError, match="enqueued"):
        await push_counts(gateway.url, "j", "r", {"enqueued": "7"})
    assert gateway.requests == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, UpstreamUnavailable),
        (503, UpstreamUnavailable),
        (429, UpstreamUnavailable),
        (400, UpstreamRejected),
    ],
)
async def test_push_translates_error_answers_into_upstream_errors(
    gateway: Gateway, status: int, error: type[Exception]
) -> None:
    """5xx and 429 are retryable UpstreamUnavailable, other 4xx UpstreamRejected; service "pushgateway"."""
    gateway.status = status
    with pytest.raises(error) as raised:
        await push_counts(gateway.url, "j", "r", COUNTS)
    assert isinstance(raised.value, UpstreamRejected | UpstreamUnavailable)
    assert raised.value.service == "pushgateway"
    assert raised.value.status == status


async def test_push_to_a_closed_port_is_upstream_unavailable() -> None:
    """Nothing listening: UpstreamUnavailable with no status, never a raw OSError."""
    with pytest.raises(UpstreamUnavailable) as raised:
        await push_counts(f"http://127.0.0.1:{free_port()}", "j", "r", COUNTS)
    assert raised.value.service == "pushgateway"
    assert raised.value.status is None


async def test_push_that_gets_no_answer_in_time_is_upstream_unavailable(gateway: Gateway) -> None:
    """A gateway that does not answer within the timeout gives UpstreamUnavailable, not a hang."""
    gateway.hold = asyncio.Event()
    with pytest.raises(UpstreamUnavailable, match="timed out"):
        await push_counts(gateway.url, "j", "r", COUNTS, http_timeout=0.3)


@pytest.mark.parametrize("paused", [True, False])
async def test_pause_state_is_one_gauge_posted_to_the_job_group(gateway: Gateway, paused: bool) -> None:
    """POST (not PUT): the group's run figures stay; only backfill_paused is replaced."""
    await push_paused(gateway.url, "backfill-producer", paused)
    assert [(m, p) for m, p, _ in gateway.requests] == [("POST", "/metrics/job/backfill-producer")]
    assert gateway.samples() == {("backfill_paused", ()): float(paused)}
