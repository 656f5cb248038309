"""One backfill request, end to end: read the row, plan, republish, persist the audit markers.

Returns an Outcome; it never acks or naks itself (the worker's settle step does). Failures raised by
the adapters are classified here, in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime

from backfill.core.errors import BackfillError
from backfill.core.model import Row
from backfill.core.outcome import (
    Ack,
    AckResult,
    DoneDetail,
    Outcome,
    Resolution,
    Retry,
    RetryPolicy,
    SkipReason,
    classify_error,
    retry_later,
    settle_retry,
)
from backfill.core.pace import NoPace, Turn
from backfill.core.payload import LinkConfig, MetaPatch, ThumbnailSource, build_meta_patch, correlation_id
from backfill.core.ports import Catalog, Pace
from backfill.core.wire import BackfillRequest, Mode, utc_stamp
from backfill.enrich import Enricher, Plan
from backfill.republish import Held, Republisher

log = logging.getLogger(__name__)
# What the consumer makes of a retry: the retry itself, or a dead letter once the delivery limit or the
# retry budget is spent (`outcome.settle_retry`, with the message's retry age from the ledger).
Settle = Callable[[Retry], Awaitable[Outcome]]


class RowProcessor:
    def __init__(
        self,
        catalog: Catalog,
        enricher: Enricher,
        republisher: Republisher,
        links: LinkConfig,
        policy: RetryPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pace: Pace | None = None,
        read_row: Callable[[int], Awaitable[Row | None]] | None = None,
        merge: Callable[[int, MetaPatch], Awaitable[Row | None]] | None = None,
    ) -> None:
        """`read_row` / `merge`: how the current row is read and its meta merged (default
        `catalog.get_row` / `catalog.merge_meta`; the worker batches both). `republisher`: how an event
        is republished and confirmed by its envelope (`backfill.republish`)."""
        self._pace: Pace = pace or NoPace()
        self._read_row = read_row or catalog.get_row
        self._merge = merge or catalog.merge_meta
        self._enricher = enricher
        self._republisher = republisher
        self._links = links
        self._policy = policy
        self._clock = clock

    async def handle(self, request: BackfillRequest, attempt: int, settle: Settle | None = None) -> Outcome:
        """`settle`: how a retry would be settled (default: by the delivery count alone). It tells a
        PMOVES.yt failure on the message's last chance, which backfills the row without links."""

        async def by_attempts(retry: Retry) -> Outcome:
            return settle_retry(retry, attempt, 0.0, self._policy)

        # A republish request holds its turn from the start: the worker's fetch cap counts it as
        # waiting for the pace while it is read and planned, not only once it asks for its token.
        waits = Held(self._pace.turn() if request.mode is Mode.REPUBLISH else Turn(None))
        try:
            return await self._run(request, waits, attempt, settle or by_attempts)
        except BackfillError as exc:
            outcome = classify_error(exc, attempt, self._policy)
        finally:
            waits.turn.release()
        if isinstance(outcome, Retry) and waits.seconds:
            return replace(outcome, paced=waits.seconds)
        return outcome

    async def _run(self, request: BackfillRequest, waits: Held, attempt: int, settle: Settle) -> Outcome:
        row = await self._read_row(request.row_id)
        planned = await self._enricher.plan(row, request.youtube)
        if not isinstance(planned, Plan):
            return planned
        if (unavailable := planned.youtube_unavailable) is not None:
            error = unavailable.error or "PMOVES.yt unavailable"
            retry = retry_later(error, attempt, self._policy, unavailable.retry_after)
            if isinstance(await settle(retry), Retry):
                return retry  # links are worth another delivery while the message has retries left
            log.warning(
                "PMOVES.yt unavailable on the last chance; backfilled without YouTube links",
                extra={"row_id": planned.row.id, "error": unavailable.error},
            )
            planned = planned.without_youtube_links()
        return await self._execute(request, planned, waits)

    async def _execute(self, request: BackfillRequest, plan: Plan, waits: Held) -> Outcome:
        """Publish (republish mode) then merge at once. At most one event per row and version reaches
        NATS as far as NATS can tell: one seen before is merged instead (`backfill.republish`)."""
        event_id: str | None = None
        sent_at: str | None = None
        if request.mode is Mode.REPUBLISH:
            cid = correlation_id(plan.row.id, request.backfill_version)
            event_id = await self._republisher.publish(plan.payload, cid, waits)
            sent_at = utc_stamp(self._clock())
        patch = build_meta_patch(
            plan.enrichment,
            self._links,
            version=request.backfill_version,
            run_id=request.run_id,
            event_id=event_id,
            sent_at=sent_at,
            current_meta=plan.row.meta_dict,
        )
        merged = await self._merge(plan.row.id, patch)
        if merged is None:
            # deleted between read and write; the event (if any) stands
            return Ack(AckResult.SKIPPED, SkipReason.ROW_MISSING)
        resolved: tuple[Resolution, ...] = (Resolution(plan.enrichment.resolved_by),)
        if plan.enrichment.thumbnail_source == ThumbnailSource.STORAGE:
            resolved += (Resolution.STORAGE_THUMBNAIL,)
        related = plan.enrichment.related
        linked = related.result if related is not None else None
        done = DoneDetail.REPUBLISHED if event_id else DoneDetail.METADATA_UPDATED
        return Ack(AckResult.DONE, done, resolved, youtube=linked)
