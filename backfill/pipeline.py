"""One backfill request, end to end: read the row, plan, republish, persist the audit markers.

Returns an Outcome; it never acks or naks itself (the worker's settle step does). Failures raised by
the adapters are classified here, in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from backfill.core.errors import BackfillError, BusError
from backfill.core.ledger import LocalLedger
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
from backfill.core.ports import Catalog, DeliveryLedger, EventPublisher, Pace
from backfill.core.wire import BackfillRequest, Mode, utc_stamp
from backfill.enrich import Enricher, Plan

log = logging.getLogger(__name__)
# What the consumer makes of a retry: the retry itself, or a dead letter once the delivery limit or the
# retry budget is spent (`outcome.settle_retry`, with the message's retry age from the ledger).
Settle = Callable[[Retry], Awaitable[Outcome]]


@dataclass
class _PaceWaits:
    """A republish request's turn at the pace, and how long it waited for it (its retry budget does
    not count that wait)."""

    turn: Turn
    seconds: float = 0.0


class RowProcessor:
    def __init__(
        self,
        catalog: Catalog,
        enricher: Enricher,
        agent_zero: EventPublisher,
        links: LinkConfig,
        policy: RetryPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pace: Pace | None = None,
        read_row: Callable[[int], Awaitable[Row | None]] | None = None,
        merge: Callable[[int, MetaPatch], Awaitable[Row | None]] | None = None,
        ledger: DeliveryLedger | None = None,
    ) -> None:
        """`read_row` / `merge`: how the current row is read and its meta merged (default
        `catalog.get_row` / `catalog.merge_meta`; the worker batches both). `ledger`: where an accepted
        event is recorded before the merge (default: in this process only)."""
        self._ledger: DeliveryLedger = ledger or LocalLedger()
        self._pace: Pace = pace or NoPace()
        self._read_row = read_row or catalog.get_row
        self._merge = merge or catalog.merge_meta
        self._enricher = enricher
        self._agent_zero = agent_zero
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
        waits = _PaceWaits(self._pace.turn() if request.mode is Mode.REPUBLISH else Turn(None))
        try:
            return await self._run(request, waits, attempt, settle or by_attempts)
        except BackfillError as exc:
            outcome = classify_error(exc, attempt, self._policy)
        finally:
            waits.turn.release()
        if isinstance(outcome, Retry) and waits.seconds:
            return replace(outcome, paced=waits.seconds)
        return outcome

    async def _run(
        self, request: BackfillRequest, waits: _PaceWaits, attempt: int, settle: Settle
    ) -> Outcome:
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

    async def _execute(self, request: BackfillRequest, plan: Plan, waits: _PaceWaits) -> Outcome:
        """Publish (republish mode) then merge at once: the crash window between the two stays small."""
        event_id: str | None = None
        sent_at: str | None = None
        if request.mode is Mode.REPUBLISH:
            event_id = await self._publish_once(plan, request.backfill_version, waits)
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

    async def _publish_once(self, plan: Plan, version: str, waits: _PaceWaits) -> str:
        """At most one event per row and version: an event accepted by an earlier delivery (whose merge
        then failed) is reused; a new one is recorded before the merge is attempted."""
        recorded = await self._ledger.event_for(plan.row.id, version)
        if recorded is not None:
            log.info("event already accepted; merging it", extra={"row_id": plan.row.id, "event": recorded})
            return recorded
        started = time.monotonic()
        await waits.turn.take()  # one global rate for every replica's republishes
        waits.seconds += time.monotonic() - started
        event_id = await self._agent_zero.publish(plan.payload, correlation_id(plan.row.id, version))
        try:
            await self._ledger.record_event(plan.row.id, version, event_id)
        except BusError as exc:  # the merge right after is the record that counts; only if it fails too
            log.warning(  # can a redelivery publish again
                "accepted event not recorded", extra={"row_id": plan.row.id, "error": str(exc)}
            )
        return event_id
