"""`producer preview`: the worker's enrichment, read-only, printed as the payloads it would republish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from backfill.core.errors import BackfillError
from backfill.core.model import Row
from backfill.core.outcome import Ack, DeadLetter
from backfill.core.wire import YoutubeLinking
from backfill.enrich import Enricher, Plan


async def preview_row(enricher: Enricher, row: Row, linking: YoutubeLinking | None = None) -> dict[str, Any]:
    """One JSON-ready record: what a worker would do with this row, and why (with `--link-youtube`, what
    PMOVES.yt gave: `youtube`). The enums go in as their plain string values."""
    try:
        planned = await enricher.plan(row, linking)
    except BackfillError as exc:
        return {"row_id": row.id, "action": "retry", "error": str(exc)}
    if isinstance(planned, Plan):
        enrichment = planned.enrichment
        source = enrichment.thumbnail_source
        return {
            "row_id": row.id,
            "action": "republish",
            "resolved_by": enrichment.resolved_by.value,
            "thumbnail_source": source.value if source is not None else None,
            **({"youtube": enrichment.related.summary()} if enrichment.related is not None else {}),
            "payload": planned.payload,
        }
    if isinstance(planned, Ack):
        return {"row_id": row.id, "action": "skip", "reason": planned.detail.value}
    assert isinstance(planned, DeadLetter)
    return {
        "row_id": row.id,
        "action": "dead_letter",
        "reason": str(planned.reason),
        "detail": planned.detail,
    }


async def preview(
    enricher: Enricher, pages: AsyncIterator[list[Row]], linking: YoutubeLinking | None = None
) -> AsyncIterator[dict[str, Any]]:
    async for page in pages:
        for row in page:
            yield await preview_row(enricher, row, linking)
