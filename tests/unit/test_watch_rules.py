"""`producer watch`'s pure rules: which Jellyfin changes could resolve a row, which dead letters are
replayed automatically (and when), which wait for an operator, the dead-letter index, the full pass's
schedule."""

from __future__ import annotations

import pytest

from backfill.core.deadletter import DeadLetterIndex, Entry
from backfill.core.matching import could_match
from backfill.core.model import JellyfinItem, Row
from backfill.core.watch import ReplayPolicy, Trigger, WatchCursor, replays_due, waiting_for_operator

ITEM_ID = "0123456789abcdef0123456789abcdef"
POLICY = ReplayPolicy(max_replays=3, backoff=60.0, backoff_max=600.0)


def row(row_id: int = 1, title: str | None = "Night Drive", status: str = "published", **meta: object) -> Row:
    return Row(id=row_id, title=title, status=status, meta=dict(meta))


def item(name: str | None, item_id: str = "f" * 32, **fields: object) -> JellyfinItem:
    return JellyfinItem(id=item_id, name=name, **fields)


@pytest.mark.parametrize(
    ("candidate", "changed", "expected"),
    [
        (row(), item("Night Drive"), True),
        (row(), item("night_drive.MKV"), True),  # folded as the search folds it
        (row(), item("Night Drive (Director's Cut)"), True),  # the search would list it
        (row(), item("Day Drive"), False),
        (row(), item(None), False),
        (row(title="Night Drive.mp4"), item("Night Drive"), True),  # the file suffix is not searched
        (row(production_year=2020), item("Night Drive", production_year=2020), True),
        (row(production_year=2020), item("Night Drive", production_year=2021), False),
        (row(premiere_date="2020-05-01"), item("Night Drive", premiere_date="2020-05-02T00:00:00Z"), True),
        (row(title="Other", jellyfin_item_id=ITEM_ID), item("Renamed", item_id=ITEM_ID), True),
        (row(title=None, jellyfin_item_id=ITEM_ID), item("X", item_id=ITEM_ID.upper()), True),
        (row(title=None), item("Night Drive"), False),
        (row(title="  "), item("Night Drive"), False),
    ],
)
def test_could_match_is_the_own_id_or_what_a_title_search_could_accept(
    candidate: Row, changed: JellyfinItem, expected: bool
) -> None:
    assert could_match(candidate, changed) is expected


def entry(
    seq: int, row_id: int | None, reason: str = "jellyfin_not_found", stored: float = 0.0, replays: int = 0
) -> Entry:
    return Entry(seq=seq, row_id=row_id, reason=reason, stored_at=stored, auto_replays=replays)


@pytest.mark.parametrize(
    ("dead", "automatic"),
    [
        (entry(1, 5), True),
        (entry(1, 5, replays=2), True),
        (entry(1, 5, replays=3), False),  # at the cap: an operator's turn
        (entry(1, None), False),  # no row to replay
        *[(entry(1, 5, reason=r), False) for r in ("ambiguous_match", "invalid_payload", "invalid_message")],
        *[(entry(1, 5, reason=r), False) for r in ("upstream_rejected", "retries_exhausted")],
    ],
)
def test_only_not_found_under_the_cap_is_replayed_automatically(dead: Entry, automatic: bool) -> None:
    assert POLICY.automatic(dead) is automatic


@pytest.mark.parametrize(
    ("replays", "wait"), [(0, 60.0), (1, 120.0), (2, 240.0), (3, 480.0), (4, 600.0), (99, 600.0)]
)
def test_the_backoff_doubles_up_to_its_maximum(replays: int, wait: float) -> None:
    assert POLICY.wait(replays) == wait


def test_a_row_is_due_once_its_backoff_ran_out_since_its_dead_letter() -> None:
    dead = entry(1, 5, stored=1000.0, replays=1)
    assert not POLICY.due(dead, 1119.0)
    assert POLICY.due(dead, 1120.0)


def test_library_changes_replay_only_rows_an_item_could_match() -> None:
    entries = [entry(1, 1), entry(2, 2), entry(3, 3, reason="ambiguous_match"), entry(4, 4), entry(5, 9)]
    rows = {
        1: row(1, "Night Drive"),
        2: row(2, "Quiet Harbor"),
        3: row(3, "Night Drive"),
        4: row(4, "Night Drive", jellyfin_public_url="u"),  # enriched meanwhile: not a candidate
    }
    chosen = replays_due(entries, rows, [item("Night Drive")], POLICY, now=0.0)
    assert chosen == [(entries[0], Trigger.LIBRARY_CHANGED)]


def test_nothing_changed_replays_nothing_and_cannot_say_falls_back_to_backoff() -> None:
    entries = [entry(1, 1, stored=0.0), entry(2, 2, stored=100.0)]
    assert replays_due(entries, {}, [], POLICY, now=1000.0) == []
    assert replays_due(entries, {}, None, POLICY, now=120.0) == [(entries[0], Trigger.BACKOFF)]


def test_rows_waiting_for_an_operator_are_counted_once_each_by_their_latest_reason() -> None:
    index = DeadLetterIndex()
    for dead in [
        entry(1, 1, "ambiguous_match"),
        entry(2, 1, "ambiguous_match"),  # the same row again: counted once
        entry(3, 2),  # automatic: not waiting
        entry(4, 3, replays=3),  # past the cap
        entry(5, None, "invalid_message"),  # no row: the dead letter itself waits
        entry(6, 4, "jellyfin_not_found"),
        entry(7, 4, "retries_exhausted"),  # the latest reason counts
    ]:
        index.add(dead)
    assert waiting_for_operator(index, POLICY) == {
        "ambiguous_match": 1,
        "invalid_message": 1,
        "jellyfin_not_found": 1,
        "retries_exhausted": 1,
    }


def test_the_index_knows_each_rows_latest_dead_letter_and_forgets_what_left() -> None:
    index = DeadLetterIndex()
    for dead in [
        entry(3, 1),
        entry(5, 2, "ambiguous_match"),
        entry(8, 1, "retries_exhausted"),
        entry(9, None),
    ]:
        index.add(dead)
    assert index.last_seq == 9 and len(index) == 4
    latest = index.latest(1)
    assert latest is not None and latest.seq == 8
    index.discard(8)
    latest = index.latest(1)
    assert latest is not None and latest.seq == 3
    index.drop_below(5)
    assert index.latest(1) is None and len(index) == 2
    assert index.count_through(5) == 1 and index.count_through(9) == 2
    index.clear()
    assert len(index) == 0 and index.last_seq == 0 and index.latest(2) is None


@pytest.mark.parametrize(
    ("cursor", "now", "due"),
    [
        (WatchCursor(), 10_000.0, False),  # the first pass from id 0 is the full pass
        (WatchCursor(started=True, last_full_at=1000.0), 4599.0, False),
        (WatchCursor(started=True, last_full_at=1000.0), 4600.0, True),
        (WatchCursor(started=True, last_full_at=4000.0, full_from=12), 4001.0, True),  # interrupted one
    ],
)
def test_a_full_pass_is_due_every_full_every_or_when_one_was_interrupted(
    cursor: WatchCursor, now: float, due: bool
) -> None:
    assert cursor.full_due(now, every=3600.0) is due
