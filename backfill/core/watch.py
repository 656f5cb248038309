"""`producer watch`'s rules: when a full pass is due, which dead letters it replays on its own and which
wait for an operator, and the records it keeps in JetStream (its cursor, its last pass, its lease).

- Only `jellyfin_not_found` is replayed automatically, and only while the row's automatic replays are
  under the cap (`Backfill-Auto-Replays`, carried by the replayed request into the dead letter it may
  become again). `ambiguous_match`, `invalid_*`, `upstream_rejected` and `retries_exhausted` need a
  human, and so does a row past the cap: those are the dead letters "waiting for an operator".
- A replay is worth it when Jellyfin's library changed in a way that could let the row resolve
  (`matching.could_match`); when Jellyfin cannot say what changed, a row is tried again after a backoff
  that doubles with each automatic replay, up to a maximum.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import msgspec

from backfill.core.catalog import is_candidate
from backfill.core.deadletter import DeadLetterIndex, Entry
from backfill.core.matching import could_match
from backfill.core.model import JellyfinItem, Row, normalize_item_id
from backfill.core.outcome import DlqReason

AUTO_REPLAYED = frozenset({DlqReason.JELLYFIN_NOT_FOUND.value})
CLOCK_MARGIN = 60.0  # seconds asked again of Jellyfin: its clock and ours may differ a little


class Trigger(enum.StrEnum):
    """Why a dead letter was replayed automatically (the metrics' `trigger` label)."""

    LIBRARY_CHANGED = "library_changed"
    BACKOFF = "backoff"


class Step(enum.StrEnum):
    """Why a row was enqueued by a pass (the metrics' `reason` label)."""

    NEW_ROW = "new_row"
    FULL = "full_pass"


@dataclass(frozen=True)
class ReplayPolicy:
    max_replays: int  # automatic replays per row; then it waits for an operator
    backoff: float  # seconds before the first retry when Jellyfin cannot say what changed
    backoff_max: float  # the longest wait between two such retries

    def automatic(self, entry: Entry) -> bool:
        """Whether the dead letter is the watcher's to replay (else it waits for an operator)."""
        return (
            entry.row_id is not None
            and entry.reason in AUTO_REPLAYED
            and entry.auto_replays < self.max_replays
        )

    def wait(self, replays: int) -> float:
        """Seconds between the dead letter and the next try, after `replays` automatic replays."""
        return float(min(self.backoff * 2 ** min(replays, 62), self.backoff_max))

    def due(self, entry: Entry, now: float) -> bool:
        return entry.stored_at is None or now >= entry.stored_at + self.wait(entry.auto_replays)


def waiting_for_operator(index: DeadLetterIndex, policy: ReplayPolicy) -> dict[str, int]:
    """Rows (and dead letters without a row) that no automatic replay will take, by reason."""
    waiting: dict[str, int] = {}
    for entry in index.latest_per_row():
        if not policy.automatic(entry):
            waiting[entry.reason] = waiting.get(entry.reason, 0) + 1
    return dict(sorted(waiting.items()))


def replays_due(
    entries: Sequence[Entry],
    rows: Mapping[int, Row],
    changed: Sequence[JellyfinItem] | None,
    policy: ReplayPolicy,
    now: float,
) -> list[tuple[Entry, Trigger]]:
    """The automatic dead letters to replay now. `changed`: what Jellyfin added or saved since it was
    last asked (a row is replayed when one of those items could match it); None when Jellyfin could
    not say, and then each row whose backoff has run out. `rows`: the current rows of `entries`; a
    row that is gone or no longer a candidate is left alone."""
    automatic = [entry for entry in entries if policy.automatic(entry)]
    if changed is None:
        return [(entry, Trigger.BACKOFF) for entry in automatic if policy.due(entry, now)]
    if not changed:
        return []
    chosen = []
    for entry in automatic:
        row = rows.get(entry.row_id or 0)
        if row is not None and is_candidate(row) and any(could_match(row, item) for item in changed):
            chosen.append((entry, Trigger.LIBRARY_CHANGED))
    return chosen


def distinct_items(items: Iterable[JellyfinItem]) -> list[JellyfinItem]:
    """Each item once (by canonical id), the last seen kept."""
    return list({normalize_item_id(item.id) or item.id: item for item in items}.values())


class WatchCursor(msgspec.Struct, frozen=True, kw_only=True):
    """Where the watcher stands, kept in JetStream so a restart neither rescans nor misses.

    `high_water`: every candidate with an id up to it was enqueued (or left out) by a pass; new rows are
    read by keyset above it. `full_from` / `full_through`: a full pass in progress (rows above
    `full_from`, up to `full_through`), finished by the next pass when one was interrupted.
    """

    high_water: int = 0
    started: bool = False  # a first pass from id 0 completed (it counts as a full pass)
    full_from: int | None = None
    full_through: int = 0
    last_full_at: float = 0.0
    library_checked_at: float | None = None  # Jellyfin was last asked what changed since then

    def full_due(self, now: float, every: float) -> bool:
        return self.full_from is not None or (self.started and now - self.last_full_at >= every)


class PassRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The last pass, for `producer status` and for the next watcher's metrics."""

    holder: str
    started_at: float
    finished_at: float
    interval: float
    completed_at: float = 0.0  # the end of the last pass that completed (this one, unless interrupted)
    full: bool = False
    interrupted: bool = False
    high_water: int = 0
    enqueued: dict[str, int] = {}  # by Step
    already_pending: int = 0
    failed: int = 0
    left_out: dict[str, int] = {}  # candidates not enqueued because of a dead letter, by its reason
    replayed: dict[str, int] = {}  # by Trigger
    waiting: dict[str, int] = {}  # rows in the dead letters waiting for an operator, by reason

    @property
    def next_at(self) -> float:
        return self.finished_at + self.interval


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Who holds the one-watcher lease, since when, and when it was last renewed (Unix times)."""

    holder: str
    since: float
    renewed_at: float
    ttl: float
