"""What `producer verify` concludes per republished row, and its report: pure, no I/O.

Two sources answer whether Discord got a row's embed (docs/upstreams.md §1, §4, §8):

- `discord`: the channel itself (`backfill.core.embeds` finds the row's own backfill embed). Per row
  `delivered` (its embed is there; `embeds_seen` counts them, 2 is a duplicate) or `not_seen`;
- `metrics`: PMOVES' publisher-discord's `DISCORD_METRICS_TABLE`, one record per envelope id
  (`published_event_id`) with `webhook_success`: `delivered` (true), `failed` (false: Discord refused
  it, or it was lost after publisher-discord's retries) or `not_seen` (no record yet).

`not_republished`: the row has no event id (metadata-only, or not backfilled).

And the embed's parts (link, Duration, Jellyfin field, thumbnail): as the channel shows them, or as the
event carried them (the row's meta holds the values the payload carried). A part the Jellyfin item
itself cannot give (no runtime, no image: the worker records that in `meta.backfill_item_lacks`) makes
the embed "complete as the item allows", not incomplete: only a part the item had and the embed lacks
is a miss. Rows backfilled before that record existed cannot tell the two apart: their missing parts
count as misses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill.core.embeds import EMBED_PARTS, SeenEmbed, same_embed_groups
from backfill.core.model import DeliveryRecord, Row
from backfill.core.payload import ITEM_LACKS_KEY

DELIVERED = "delivered"
FAILED = "failed"
NOT_SEEN = "not_seen"
NOT_REPUBLISHED = "not_republished"
STATES = (DELIVERED, FAILED, NOT_SEEN, NOT_REPUBLISHED)
COMPLETE = "complete"
AS_ITEM_ALLOWS = "complete_as_item_allows"
INCOMPLETE = "incomplete"
VERDICTS = (COMPLETE, AS_ITEM_ALLOWS, INCOMPLETE)
DISCORD = "discord"
METRICS_TABLE = "metrics"


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


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def event_embed(meta: Mapping[str, Any]) -> dict[str, bool]:
    """The parts publisher-discord renders from the event the row carried: the link (`public_url`, else
    the deep link), a numeric duration >= 0, the Jellyfin field (item id and deep link), the thumbnail."""
    duration = meta.get("duration")
    link = meta.get("jellyfin_public_url")
    return {
        "link": _text(meta.get("public_url")) or _text(link),
        "duration": isinstance(duration, int | float) and not isinstance(duration, bool) and duration >= 0,
        "jellyfin": _text(meta.get("jellyfin_item_id")) and _text(link),
        "thumbnail": _text(meta.get("thumbnail_url")),
    }


def recorded_lacks(meta: Mapping[str, Any]) -> frozenset[str] | None:
    """The parts the worker recorded the item could not give; None when the row has no such record."""
    value = meta.get(ITEM_LACKS_KEY)
    if not isinstance(value, list):
        return None
    return frozenset(part for part in value if isinstance(part, str))


@dataclass(frozen=True)
class RowCheck:
    row_id: int
    event_id: str | None
    delivery: str
    embed: dict[str, bool] | None  # None: no embed to judge (not republished, or not in the channel)
    embeds_seen: int | None = None  # how many embeds the channel shows for the row (discord only)
    item_lacks: frozenset[str] | None = None
    seen_at: str | None = None
    same_embed_as: tuple[int, ...] = ()  # rows whose embed Discord cannot tell from this one's

    @property
    def missing(self) -> list[str]:
        return [part for part in EMBED_PARTS if self.embed is not None and not self.embed.get(part)]

    @property
    def missed(self) -> list[str]:
        """Missing parts the item had: the embed lacks what it could have shown."""
        return [part for part in self.missing if self.item_lacks is None or part not in self.item_lacks]

    @property
    def verdict(self) -> str | None:
        if self.embed is None:
            return None
        if not self.missing:
            return COMPLETE
        return INCOMPLETE if self.missed else AS_ITEM_ALLOWS

    @property
    def duplicated(self) -> bool:
        return self.embeds_seen is not None and self.embeds_seen > 1 + len(self.same_embed_as)

    @property
    def settled(self) -> bool:
        """Nothing to report: delivered once, or never republished."""
        return self.delivery == NOT_REPUBLISHED or (self.delivery == DELIVERED and not self.duplicated)

    def as_dict(self) -> dict[str, Any]:
        found = {
            "row_id": self.row_id,
            "event_id": self.event_id,
            "delivery": self.delivery,
            "embeds_seen": self.embeds_seen,
            "seen_at": self.seen_at,
            "embed": self.embed,
            "embed_verdict": self.verdict,
            "embed_missing": self.missing,
            "item_lacks": None if self.item_lacks is None else sorted(self.item_lacks),
        }
        return found | ({"same_embed_as": list(self.same_embed_as)} if self.same_embed_as else {})


def check_row(row: Row, records: Mapping[str, Sequence[DeliveryRecord]]) -> RowCheck:
    """One row's delivery from the metrics records by event id, and the embed its event carried."""
    event_id = event_id_of(row)
    if event_id is None:
        return RowCheck(row.id, None, NOT_REPUBLISHED, None)
    found = records.get(event_id, ())
    stamps = sorted(r.published_at for r in found if r.published_at)
    meta = row.meta_dict
    return RowCheck(
        row.id,
        event_id,
        delivery_state(found),
        event_embed(meta),
        item_lacks=recorded_lacks(meta),
        seen_at=stamps[-1] if stamps else None,
    )


def channel_checks(rows: Sequence[Row], seen: Mapping[int, Sequence[SeenEmbed]]) -> list[RowCheck]:
    """Each row's delivery from the embeds the channel shows for it (`backfill.core.embeds.match_embeds`).
    Rows whose embeds look alike share them: delivered when there are as many as rows."""
    lookalikes = same_embed_groups(rows)
    checks = []
    for row in rows:
        event_id = event_id_of(row)
        if event_id is None:
            checks.append(RowCheck(row.id, None, NOT_REPUBLISHED, None))
            continue
        embeds, others = seen.get(row.id, ()), lookalikes.get(row.id, ())
        delivered = len(embeds) >= 1 + len(others)
        checks.append(
            RowCheck(
                row.id,
                event_id,
                DELIVERED if delivered else NOT_SEEN,
                embeds[0].parts if embeds else None,
                embeds_seen=len(embeds),
                item_lacks=recorded_lacks(row.meta_dict),
                seen_at=embeds[0].at.isoformat() if embeds else None,
                same_embed_as=others,
            )
        )
    return checks


def by_event(records: Iterable[DeliveryRecord]) -> dict[str, list[DeliveryRecord]]:
    grouped: dict[str, list[DeliveryRecord]] = {}
    for record in records:
        grouped.setdefault(record.published_event_id, []).append(record)
    return grouped


@dataclass
class Report:
    source: str  # DISCORD or METRICS_TABLE
    origin: str  # the channel id, or the metrics table's name
    selection: dict[str, Any]
    checks: list[RowCheck] = field(default_factory=list)
    missing_ids: list[int] = field(default_factory=list)  # --ids that are not in the catalog
    window_start: str | None = None  # the run's start, as the window read from (discord) or checked
    recording: bool | None = None  # metrics: whether publisher-discord recorded anything since then

    @property
    def unsettled(self) -> int:
        """Republished rows not delivered, or delivered more than once: the exit code's business."""
        return sum(1 for check in self.checks if not check.settled)

    def totals(self) -> dict[str, int]:
        states = Counter(check.delivery for check in self.checks)
        verdicts = Counter(check.verdict for check in self.checks)
        totals = {"rows": len(self.checks), **{state: states[state] for state in STATES}}
        totals["duplicated"] = sum(1 for check in self.checks if check.duplicated)
        totals |= {f"embed_{verdict}": verdicts[verdict] for verdict in VERDICTS}
        for part in EMBED_PARTS:
            totals[f"missing_{part}"] = sum(1 for check in self.checks if part in check.missed)
        return totals

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "origin": self.origin,
            **self.selection,
            "window_start": self.window_start,
            "recording": self.recording,
            "totals": self.totals(),
            "rows": [check.as_dict() for check in self.checks],
            "missing_ids": self.missing_ids,
        }


def _embed_text(check: RowCheck) -> str:
    verdict = check.verdict
    if verdict is None:
        return "-"
    if verdict == AS_ITEM_ALLOWS:
        return f"complete as the item allows (the item has no {', '.join(check.missing)})"
    if verdict == INCOMPLETE:
        return "incomplete: missing " + ", ".join(check.missed)
    return verdict


def _row_line(check: RowCheck) -> str:
    delivery = check.delivery
    if check.embeds_seen is not None:
        delivery += f" ({check.embeds_seen} embed{'s' * (check.embeds_seen != 1)})"
    if check.duplicated:
        delivery += " DUPLICATE"
    return (
        f"  row {check.row_id:<10} {delivery:<28} event {check.event_id or '-':<36}"
        f"  embed {_embed_text(check)}"
    )


def _origin_text(report: Report) -> str:
    if report.source == DISCORD:
        since = f", messages since {report.window_start}" if report.window_start else ""
        return f"the Discord channel {report.origin}{since}"
    return f"publisher-discord's table {report.origin}"


def _totals_text(totals: Mapping[str, int]) -> str:
    misses = ", ".join(f"{part} {totals[f'missing_{part}']}" for part in EMBED_PARTS)
    return (
        f"{totals['rows']} rows: {totals[DELIVERED]} delivered, {totals[FAILED]} failed, "
        f"{totals[NOT_SEEN]} not seen, {totals[NOT_REPUBLISHED]} not republished, "
        f"{totals['duplicated']} delivered more than once; embeds: {totals['embed_complete']} complete, "
        f"{totals[f'embed_{AS_ITEM_ALLOWS}']} complete as the item allows, "
        f"{totals['embed_incomplete']} incomplete (missed: {misses})"
    )


def nothing_recorded_notice(report: Report) -> str | None:
    """The metrics table exists, rows are not seen, and publisher-discord recorded nothing at all since
    the run began: it is not recording (the stock PMOVES state), so "not seen" proves nothing."""
    if report.source != METRICS_TABLE or report.recording is not False:
        return None
    if not any(check.delivery == NOT_SEEN for check in report.checks):
        return None
    return (
        f"publisher-discord has recorded nothing in {report.origin} since the run began "
        f"({report.window_start}): it is not recording deliveries (a stock PMOVES publisher-discord lacks "
        "the supabase package; README, runbook step 7), so these rows are not known either way; "
        "or read the channel: --source discord"
    )


def render(report: Report) -> str:
    """The report as text: one line per row, then the totals (and why "not seen" says nothing)."""
    lines = [f"Discord delivery of republished rows, from {_origin_text(report)}:"]
    lines += [_row_line(check) for check in report.checks]
    lines.append(_totals_text(report.totals()))
    if (notice := nothing_recorded_notice(report)) is not None:
        lines.append(notice)
    if report.missing_ids:
        lines.append(f"not in the catalog: {', '.join(map(str, report.missing_ids[:50]))}")
    return "\n".join(lines)
