"""One backfill request, end to end: read the row, plan, republish, persist the audit markers.

Returns an Outcome; it never acks or naks itself (the worker's settle step does). Failures raised by
the adapters are classified here, in one place.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from backfill.agent_zero import AgentZeroClient
from backfill.catalog import Catalog
from backfill.enrich import Enricher, Plan
from backfill.errors import BackfillError
from backfill.model import Row
from backfill.outcome import ROW_MISSING, Ack, Outcome, RetryPolicy, classify_error
from backfill.pace import GlobalPace, NoPace
from backfill.payload import LinkConfig, MetaPatch, build_meta_patch, correlation_id
from backfill.wire import BackfillRequest, Mode

Pace = GlobalPace | NoPace


def utc_stamp(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class RowProcessor:
    def __init__(
        self,
        catalog: Catalog,
        enricher: Enricher,
        agent_zero: AgentZeroClient,
        links: LinkConfig,
        policy: RetryPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        pace: Pace | None = None,
        read_row: Callable[[int], Awaitable[Row | None]] | None = None,
        merge: Callable[[int, MetaPatch], Awaitable[Row | None]] | None = None,
    ) -> None:
        """`read_row` / `merge`: how the current row is read and its meta merged (default
        `catalog.get_row` / `catalog.merge_meta`; the worker batches both)."""
        self._pace: Pace = pace or NoPace()
        self._read_row = read_row or catalog.get_row
        self._merge = merge or catalog.merge_meta
        self._enricher = enricher
        self._agent_zero = agent_zero
        self._links = links
        self._policy = policy
        self._clock = clock

    async def handle(self, request: BackfillRequest, attempt: int) -> Outcome:
        try:
            return await self._run(request)
        except BackfillError as exc:
            return classify_error(exc, attempt, self._policy)

    async def _run(self, request: BackfillRequest) -> Outcome:
        row = await self._read_row(request.row_id)
        planned = await self._enricher.plan(row)
        if not isinstance(planned, Plan):
            return planned
        return await self._execute(request, planned)

    async def _execute(self, request: BackfillRequest, plan: Plan) -> Outcome:
        """Publish (republish mode) then merge at once: the crash window between the two stays small."""
        event_id: str | None = None
        sent_at: str | None = None
        if request.mode is Mode.REPUBLISH:
            cid = correlation_id(plan.row.id, request.backfill_version)
            await self._pace.acquire()  # one global rate for every replica's republishes
            event_id = await self._agent_zero.publish(plan.payload, cid)
            sent_at = utc_stamp(self._clock())
        patch = build_meta_patch(
            plan.enrichment,
            self._links,
            version=request.backfill_version,
            run_id=request.run_id,
            event_id=event_id,
            sent_at=sent_at,
        )
        merged = await self._merge(plan.row.id, patch)
        if merged is None:
            return Ack("skipped", ROW_MISSING)  # deleted between read and write; the event (if any) stands
        resolved: tuple[str, ...] = (plan.enrichment.resolved_by,)
        if plan.enrichment.thumbnail_source == "storage":
            resolved += ("storage_thumbnail",)
        return Ack("done", "republished" if event_id else "metadata_updated", resolved)


def elapsed_since(stamp: str, now: float | None = None) -> float:
    """Seconds since an ISO timestamp (the request's `enqueued_at`); 0 when unreadable."""
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
    return max((now if now is not None else time.time()) - then, 0.0)
