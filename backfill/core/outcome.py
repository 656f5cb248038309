"""What to do with a message once it has been handled: pure values and the policy that picks them.

A handler returns an Outcome; exactly one place (the worker's settle step) maps it to JetStream:
`Ack` -> ack, `Retry` -> nak(delay), `DeadLetter` -> publish to the dead letters, await ack, then term.

The kinds of outcome are StrEnums whose values are what metrics labels, logs, JSON and dead-letter
subjects show: a member compares equal to, formats as and encodes as its string.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from backfill.core.errors import BackfillError, UpstreamRejected


class AckResult(StrEnum):
    """How a handled message ended when it is acked (the metrics' `outcome` label)."""

    DONE = "done"
    SKIPPED = "skipped"


class Settled(StrEnum):
    """How the worker settled a message (the metrics' `outcome` label): an Ack's result, or what it
    did instead."""

    DONE = AckResult.DONE.value
    SKIPPED = AckResult.SKIPPED.value
    RETRIED = "retried"  # nak'd with a delay, or left unsettled: JetStream redelivers it
    DEAD_LETTERED = "dead_lettered"


class DoneDetail(StrEnum):
    """What a `done` row got."""

    REPUBLISHED = "republished"  # an event published, then the meta merged
    METADATA_UPDATED = "metadata_updated"  # `metadata_only`: the meta merged, nothing published


class SkipReason(StrEnum):
    """Why a row was left alone (acked as `skipped`)."""

    ROW_MISSING = "row_missing"
    NOT_PUBLISHED = "not_published"
    ALREADY_ENRICHED = "already_enriched"


class Resolution(StrEnum):
    """How a row was (or was not) resolved: the metrics' `method` label (`metrics.RESOLUTIONS`)."""

    JELLYFIN_ID = "jellyfin_id"
    JELLYFIN_SEARCH = "jellyfin_search"
    STORAGE_THUMBNAIL = "storage_thumbnail"
    UNRESOLVED = "unresolved"


class DlqReason(StrEnum):
    """Dead-letter reasons: a bounded label set, each a subject token on the DLQ stream."""

    JELLYFIN_NOT_FOUND = "jellyfin_not_found"
    AMBIGUOUS_MATCH = "ambiguous_match"
    INVALID_PAYLOAD = "invalid_payload"
    INVALID_MESSAGE = "invalid_message"
    UPSTREAM_REJECTED = "upstream_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"


@dataclass(frozen=True)
class Ack:
    result: AckResult
    detail: DoneDetail | SkipReason  # done: what was done; skipped: why
    resolutions: tuple[Resolution, ...] = ()  # how the row was resolved, for the metrics
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
    reason: str  # a DlqReason (compares equal to its string)
    detail: str


Outcome = Ack | Retry | DeadLetter


def resolutions_of(outcome: Outcome) -> tuple[Resolution, ...]:
    """Metric labels for how a row was (or was not) resolved."""
    if isinstance(outcome, Ack):
        return outcome.resolutions
    if isinstance(outcome, DeadLetter) and outcome.reason in (JELLYFIN_NOT_FOUND, AMBIGUOUS_MATCH):
        return (Resolution.UNRESOLVED,)
    return ()


# The module-level names other modules import.
JELLYFIN_NOT_FOUND = DlqReason.JELLYFIN_NOT_FOUND
AMBIGUOUS_MATCH = DlqReason.AMBIGUOUS_MATCH
INVALID_PAYLOAD = DlqReason.INVALID_PAYLOAD
INVALID_MESSAGE = DlqReason.INVALID_MESSAGE
UPSTREAM_REJECTED = DlqReason.UPSTREAM_REJECTED
RETRIES_EXHAUSTED = DlqReason.RETRIES_EXHAUSTED
# Plain strings, in declaration order: argparse `choices` prints them with repr().
DLQ_REASONS: tuple[str, ...] = tuple(reason.value for reason in DlqReason)

ROW_MISSING = SkipReason.ROW_MISSING
NOT_PUBLISHED = SkipReason.NOT_PUBLISHED
ALREADY_ENRICHED = SkipReason.ALREADY_ENRICHED


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
