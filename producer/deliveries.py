"""What `producer verify` concludes per republished row, and its report: pure, no I/O.

PMOVES' publisher-discord records every event it handles in `DISCORD_METRICS_TABLE` (docs/upstreams.md
§8): one row per envelope id (`published_event_id`) with `webhook_success`. For each row a run
republished (its `meta.backfill_event_id`) the delivery is:

- `delivered`: a record says Discord accepted the embed (`webhook_success` true);
- `failed`: records exist and none says so (`webhook_success` false: Discord refused it, or it was lost
  after publisher-discord's retries);
- `not_seen`: no record yet (publisher-discord has not handled it, is not subscribed to the topic, or
  records nowhere); `not_republished`: the row has no event id (metadata-only, or not backfilled).

And whether the event carried what the embed renders: the row's meta holds the very values the
payload carried, so it tells the deep link (`jellyfin_public_url`), the duration and the thumbnail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill.core.model import DeliveryRecord, Row

DELIVERED = "delivered"
FAILED = "failed"
NOT_SEEN = "not_seen"
NOT_REPUBLISHED = "not_republished"
STATES = (DELIVERED, FAILED, NOT_SEEN, NOT_REPUBLISHED)
EMBED_PARTS = ("deep_link", "duration", "thumbnail")


def event_id_of(row: Row) -> str | None:
    value = row.meta_dict.get("backfill_event_id")
    return value if isinstance(value, str) and value else None


def delivery_state(records: Sequence[DeliveryRecord]) -> str:
    """delivered when any record says Discord accepted the embed; failed when one says it did not."""
    if any(record.webhook_success is True for record in records):
        return DELIVERED
    if any(record.webhook_success is False for record in records):
        return FAILED
    return NOT_SEEN


def embed_parts(meta: Mapping[str, Any]) -> dict[str, bool]:
    """Which parts of the embed the event carried: publisher-discord links to the deep link, shows the
    duration as a field and the thumbnail as the embed's image."""
    link, duration, thumbnail = (meta.get(k) for k in ("jellyfin_public_url", "duration", "thumbnail_url"))
    return {
        "deep_link": isinstance(link, str) and bool(link),
        "duration": isinstance(duration, int | float) and not isinstance(duration, bool) and duration >= 0,
        "thumbnail": isinstance(thumbnail, str) and bool(thumbnail),
    }


@dataclass(frozen=True)
class RowCheck:
    row_id: int
    event_id: str | None
    delivery: str
    embed: dict[str, bool]
    published_at: str | None = None

    @property
    def missing(self) -> list[str]:
        return [part for part in EMBED_PARTS if not self.embed.get(part)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "row_id": self.row_id,
            "event_id": self.event_id,
            "delivery": self.delivery,
            "published_at": self.published_at,
            "embed": self.embed,
            "embed_missing": self.missing,
        }


def check_row(row: Row, records: Mapping[str, Sequence[DeliveryRecord]]) -> RowCheck:
    """One row's delivery and embed, from the metrics records by event id."""
    event_id = event_id_of(row)
    embed = embed_parts(row.meta_dict)
    if event_id is None:
        return RowCheck(row.id, None, NOT_REPUBLISHED, embed)
    found = records.get(event_id, ())
    stamps = sorted(r.published_at for r in found if r.published_at)
    return RowCheck(row.id, event_id, delivery_state(found), embed, stamps[-1] if stamps else None)


def by_event(records: Iterable[DeliveryRecord]) -> dict[str, list[DeliveryRecord]]:
    grouped: dict[str, list[DeliveryRecord]] = {}
    for record in records:
        grouped.setdefault(record.published_event_id, []).append(record)
    return grouped


@dataclass
class Report:
    table: str
    selection: dict[str, Any]
    checks: list[RowCheck] = field(default_factory=list)
    missing_ids: list[int] = field(default_factory=list)  # --ids that are not in the catalog

    @property
    def failed(self) -> int:
        return sum(1 for check in self.checks if check.delivery == FAILED)

    def totals(self) -> dict[str, int]:
        states = Counter(check.delivery for check in self.checks)
        republished = [check for check in self.checks if check.delivery != NOT_REPUBLISHED]
        totals = {"rows": len(self.checks), **{state: states[state] for state in STATES}}
        totals["embed_incomplete"] = sum(1 for check in republished if check.missing)
        for part in EMBED_PARTS:
            totals[f"missing_{part}"] = sum(1 for check in republished if part in check.missing)
        return totals

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            **self.selection,
            "totals": self.totals(),
            "rows": [check.as_dict() for check in self.checks],
            "missing_ids": self.missing_ids,
        }


def render(report: Report) -> str:
    """The report as text: one line per row, then the totals."""
    lines = [f"Discord delivery of republished rows, from {report.table}:"]
    for check in report.checks:
        embed = "complete" if not check.missing else "missing " + ", ".join(check.missing)
        lines.append(
            f"  row {check.row_id:<10} {check.delivery:<16} event {check.event_id or '-':<36}  embed {embed}"
        )
    totals = report.totals()
    lines.append(
        f"{totals['rows']} rows: {totals[DELIVERED]} delivered, {totals[FAILED]} failed, "
        f"{totals[NOT_SEEN]} not seen yet, {totals[NOT_REPUBLISHED]} not republished; "
        f"{totals['embed_incomplete']} republished without a full embed "
        f"(deep link {totals['missing_deep_link']}, duration {totals['missing_duration']}, "
        f"thumbnail {totals['missing_thumbnail']} missing)"
    )
    if report.missing_ids:
        lines.append(f"not in the catalog: {', '.join(map(str, report.missing_ids[:50]))}")
    return "\n".join(lines)
