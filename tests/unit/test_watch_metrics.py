"""The watcher's metrics: a pass's counters and gauges, the cluster's last pass, the lease holder."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from backfill.core.watch import PassRecord
from backfill.watch_metrics import WatchMetrics


def value(metrics: WatchMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def record(**fields: object) -> PassRecord:
    base: dict[str, object] = {"holder": "w", "started_at": 100.0, "finished_at": 102.5, "interval": 60.0}
    return PassRecord(**(base | fields))


def test_a_pass_counts_its_rows_and_replays_and_sets_the_last_pass_gauges() -> None:
    metrics = WatchMetrics(CollectorRegistry())
    done = record(
        completed_at=102.5,
        enqueued={"new_row": 3, "full_pass": 1},
        replayed={"library_changed": 2},
        left_out={"ambiguous_match": 1},
        waiting={"ambiguous_match": 1},
        high_water=42,
    )
    metrics.observe_pass(done, {("jellyfin_not_found", "library_changed"): 2})
    metrics.observe_pass(record(completed_at=200.0, finished_at=200.0, enqueued={"new_row": 1}), {})
    assert value(metrics, "backfill_watch_rows_enqueued_total", reason="new_row") == 4
    assert value(metrics, "backfill_watch_last_pass_rows_enqueued", reason="new_row") == 1
    assert value(metrics, "backfill_watch_last_pass_rows_enqueued", reason="full_pass") == 0
    assert (
        value(
            metrics,
            "backfill_watch_dead_letters_replayed_total",
            reason="jellyfin_not_found",
            trigger="library_changed",
        )
        == 2
    )
    assert value(metrics, "backfill_watch_last_pass_dead_letters_replayed", trigger="library_changed") == 0
    assert value(metrics, "backfill_watch_passes_total", result="completed") == 2
    assert value(metrics, "backfill_watch_last_pass_timestamp_seconds") == 200.0
    assert value(metrics, "backfill_watch_rows_left_out", reason="ambiguous_match") == 0  # the last pass's
    assert (
        value(metrics, "backfill_watch_dead_letters_waiting", reason="invalid_payload") == 0
    )  # every reason shown


def test_an_interrupted_pass_keeps_the_last_completed_time() -> None:
    metrics = WatchMetrics(CollectorRegistry())
    metrics.observe_pass(record(completed_at=50.0, interrupted=True), {})
    assert value(metrics, "backfill_watch_passes_total", result="interrupted") == 1
    assert value(metrics, "backfill_watch_last_pass_timestamp_seconds") == 50.0


def test_the_holder_label_follows_who_holds_the_lease() -> None:
    metrics = WatchMetrics(CollectorRegistry())
    metrics.set_holder("watch-a")
    metrics.set_holder("watch-b")
    assert value(metrics, "backfill_watch_lease_holder", holder="watch-a") is None
    assert value(metrics, "backfill_watch_lease_holder", holder="watch-b") == 1
    metrics.set_holder(None)
    assert value(metrics, "backfill_watch_lease_holder", holder="watch-b") is None
