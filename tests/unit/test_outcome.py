"""Outcome policy: every failure maps to retry-with-delay or a dead letter with a reason."""

from __future__ import annotations

import pytest

from backfill.core.errors import (
    BackfillError,
    BusError,
    CatalogConflict,
    UpstreamRejected,
    UpstreamUnavailable,
)
from backfill.core.outcome import (
    Ack,
    AckResult,
    DeadLetter,
    Retry,
    RetryPolicy,
    Settled,
    backoff_delay,
    classify_error,
    settle_retry,
)
from backfill.metrics import OUTCOMES

POLICY = RetryPolicy(base_delay=1.0, max_delay=60.0, max_attempts=5, budget_seconds=3600.0)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.5, 1.0), (2, 1.0, 2.0), (4, 4.0, 8.0), (7, 30.0, 60.0), (50, 30.0, 60.0)],
)
def test_backoff_is_jittered_exponential_and_capped(attempt: int, low: float, high: float) -> None:
    """base*2^(n-1) capped at max_delay, jittered within [50 %, 100 %]."""
    assert backoff_delay(attempt, POLICY, rand=lambda: 0.0) == low
    assert backoff_delay(attempt, POLICY, rand=lambda: 1.0) == high


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (UpstreamUnavailable("jellyfin", "timeout"), Retry),
        (UpstreamUnavailable("catalog", "503", status=503), Retry),
        (CatalogConflict("lost races"), Retry),
        (BusError("no ack"), Retry),
        (UpstreamRejected("agent_zero", "422", status=422), DeadLetter),
        (UpstreamRejected("catalog", "401", status=401), DeadLetter),
    ],
)
def test_errors_classify_by_retryability(error: BackfillError, kind: type) -> None:
    """Transient failures retry; a 4xx retrying cannot fix goes to the dead letters as upstream_rejected."""
    outcome = classify_error(error, 1, POLICY, rand=lambda: 0.5)
    assert isinstance(outcome, kind)
    if isinstance(outcome, DeadLetter):
        assert outcome.reason == "upstream_rejected"


def test_retry_after_is_honoured_but_capped() -> None:
    """A 429/503 Retry-After longer than the backoff wins, up to the cap."""
    slow = UpstreamUnavailable("agent_zero", "503", status=503, retry_after=42.0)
    assert classify_error(slow, 1, POLICY, rand=lambda: 0.0) == Retry(42.0, str(slow))
    huge = UpstreamUnavailable("agent_zero", "503", status=503, retry_after=10_000.0)
    outcome = classify_error(huge, 1, POLICY, rand=lambda: 0.0)
    assert isinstance(outcome, Retry)
    assert outcome.delay == POLICY.retry_after_cap


def test_last_delivery_dead_letters_instead_of_retrying() -> None:
    """On the last allowed delivery a retry becomes retries_exhausted with the last error."""
    outcome = settle_retry(Retry(4.0, "jellyfin: timeout"), attempt=5, age_seconds=10, policy=POLICY)
    assert outcome == DeadLetter("retries_exhausted", "after 5 deliveries: jellyfin: timeout")


def test_time_budget_dead_letters_a_retry_that_would_overrun_it() -> None:
    """A retry whose delay would pass the budget in time is exhausted too."""
    outcome = settle_retry(Retry(30.0, "x"), attempt=2, age_seconds=3590, policy=POLICY)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "retries_exhausted"


def test_settle_leaves_acks_dead_letters_and_early_retries_alone() -> None:
    """Only a retry at the limit changes."""
    for outcome in (Ack("done", "republished"), DeadLetter("jellyfin_not_found", "x"), Retry(1.0, "x")):
        assert settle_retry(outcome, attempt=1, age_seconds=0, policy=POLICY) == outcome


def test_resolution_labels_follow_the_outcome() -> None:
    """Done rows carry how they were resolved; unmatched dead letters count as unresolved; others nothing."""
    from backfill.core.outcome import resolutions_of

    assert resolutions_of(Ack("done", "republished", ("jellyfin_search", "storage_thumbnail"))) == (
        "jellyfin_search",
        "storage_thumbnail",
    )
    assert resolutions_of(DeadLetter("ambiguous_match", "x")) == ("unresolved",)
    assert resolutions_of(DeadLetter("jellyfin_not_found", "x")) == ("unresolved",)
    assert resolutions_of(DeadLetter("invalid_payload", "x")) == ()
    assert resolutions_of(Retry(1.0, "x")) == ()


def test_settled_kinds_are_the_outcome_labels_dashboards_and_alerts_read() -> None:
    assert [str(kind) for kind in Settled] == ["done", "skipped", "retried", "dead_lettered"]
    assert OUTCOMES == ("done", "skipped", "retried", "dead_lettered")
    assert all(Settled(result) == result for result in AckResult)  # an Ack settles as its result
