"""What to do with a message once it has been handled: pure values and the policy that picks them.

A handler returns an Outcome; exactly one place (the worker's settle step) maps it to JetStream:
`Ack` -> ack, `Retry` -> nak(delay), `DeadLetter` -> publish to the dead letters, await ack, then term.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from backfill.core.errors import BackfillError, UpstreamRejected


@dataclass(frozen=True)
class Ack:
    result: str  # "done" | "skipped"
    detail: str  # done: "republished" | "metadata_updated"; skipped: why
    resolutions: tuple[str, ...] = ()  # how the row was resolved, for the metrics (see metrics.RESOLUTIONS)
    youtube: str | None = (
        None  # done: how YouTube linking ended (backfill.core.related.RESULTS); None: not asked
    )


@dataclass(frozen=True)
class Retry:
    delay: float
    error: str
    paced: float = 0.0  # seconds this delivery waited for the global pace: never counted as retrying


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str


Outcome = Ack | Retry | DeadLetter


def resolutions_of(outcome: Outcome) -> tuple[str, ...]:
    """Metric labels for how a row was (or was not) resolved."""
    if isinstance(outcome, Ack):
        return outcome.resolutions
    if isinstance(outcome, DeadLetter) and outcome.reason in (JELLYFIN_NOT_FOUND, AMBIGUOUS_MATCH):
        return ("unresolved",)
    return ()


# Dead-letter reasons (bounded label set; each is a subject token on the DLQ stream).
JELLYFIN_NOT_FOUND = "jellyfin_not_found"
AMBIGUOUS_MATCH = "ambiguous_match"
INVALID_PAYLOAD = "invalid_payload"
INVALID_MESSAGE = "invalid_message"
UPSTREAM_REJECTED = "upstream_rejected"
RETRIES_EXHAUSTED = "retries_exhausted"
DLQ_REASONS = (
    JELLYFIN_NOT_FOUND,
    AMBIGUOUS_MATCH,
    INVALID_PAYLOAD,
    INVALID_MESSAGE,
    UPSTREAM_REJECTED,
    RETRIES_EXHAUSTED,
)

# Skip reasons.
ROW_MISSING = "row_missing"
NOT_PUBLISHED = "not_published"
ALREADY_ENRICHED = "already_enriched"


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff from the delivery count, capped; a budget in attempts and time."""

    base_delay: float = 1.0
    max_delay: float = 60.0
    max_attempts: int = 10
    budget_seconds: float = 6 * 3600.0
    retry_after_cap: float = 900.0


def backoff_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Delay before delivery `attempt + 1`: base * 2^(attempt-1), capped, with jitter in [50 %, 100 %]."""
    exponent = max(attempt - 1, 0)
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** min(exponent, 30)))
    return round(float(ceiling * (0.5 + 0.5 * rand())), 3)


def classify_error(
    error: BackfillError,
    attempt: int,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> Outcome:
    """Map a failure to retry-with-delay or dead-letter; honour an upstream's Retry-After."""
    if isinstance(error, UpstreamRejected):
        return DeadLetter(UPSTREAM_REJECTED, str(error))
    if not error.retryable:
        return DeadLetter(UPSTREAM_REJECTED, str(error))
    return retry_later(str(error), attempt, policy, getattr(error, "retry_after", None), rand)


def retry_later(
    error: str,
    attempt: int,
    policy: RetryPolicy,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> Retry:
    """A retry after the backoff for `attempt`, or after the upstream's Retry-After when that is longer."""
    delay = backoff_delay(attempt, policy, rand)
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), policy.retry_after_cap))
    return Retry(delay=delay, error=error)


def settle_retry(outcome: Outcome, attempt: int, age_seconds: float, policy: RetryPolicy) -> Outcome:
    """A retry on the last allowed delivery, or past the time budget, becomes a dead letter instead."""
    if not isinstance(outcome, Retry):
        return outcome
    if attempt >= policy.max_attempts:
        return DeadLetter(RETRIES_EXHAUSTED, f"after {attempt} deliveries: {outcome.error}")
    if age_seconds + outcome.delay > policy.budget_seconds:
        return DeadLetter(
            RETRIES_EXHAUSTED, f"retry budget of {policy.budget_seconds:.0f}s spent: {outcome.error}"
        )
    return outcome
