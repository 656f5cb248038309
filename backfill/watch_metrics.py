"""`producer watch`'s Prometheus metrics: one object on a registry that tests can pass fresh.

The last pass's time is the cluster's, read from the watcher's record in JetStream by whichever watcher
runs (holding the lease or waiting for it), so a takeover keeps the series continuous and a holder that
stopped passing shows on the waiting one too (the `BackfillWatchStalled` alert).
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from backfill.core.outcome import DlqReason
from backfill.core.watch import AUTO_REPLAYED, PassRecord, Step, Trigger

PASS_RESULTS = ("completed", "interrupted", "failed")


class WatchMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.last_pass = Gauge(
            "backfill_watch_last_pass_timestamp_seconds",
            "When the last watch pass completed (Unix time; before any pass ever, the watcher's start).",
            registry=registry,
        )
        self.interval = Gauge(
            "backfill_watch_interval_seconds",
            "BACKFILL_WATCH_INTERVAL: seconds between passes.",
            registry=registry,
        )
        self.lease_held = Gauge(
            "backfill_watch_lease_held",
            "1 while this watcher holds the lease, 0 while it waits.",
            registry=registry,
        )
        self.lease_holder = Gauge(
            "backfill_watch_lease_holder",
            "1, labelled with the watcher holding the lease as this one last saw it.",
            ["holder"],
            registry=registry,
        )
        self.passes = Counter(
            "backfill_watch_passes",
            "Watch passes run by this watcher, by result.",
            ["result"],
            registry=registry,
        )
        self.enqueued = Counter(
            "backfill_watch_rows_enqueued",
            "Rows a pass enqueued, by why: new_row (above the high-water mark) or full_pass.",
            ["reason"],
            registry=registry,
        )
        self.replayed = Counter(
            "backfill_watch_dead_letters_replayed",
            "Dead letters replayed automatically, by reason and trigger (library_changed, backoff).",
            ["reason", "trigger"],
            registry=registry,
        )
        self.last_enqueued = Gauge(
            "backfill_watch_last_pass_rows_enqueued",
            "Rows the last pass enqueued, by why.",
            ["reason"],
            registry=registry,
        )
        self.last_replayed = Gauge(
            "backfill_watch_last_pass_dead_letters_replayed",
            "Dead letters the last pass replayed, by trigger.",
            ["trigger"],
            registry=registry,
        )
        self.left_out = Gauge(
            "backfill_watch_rows_left_out",
            "Candidates the last pass did not enqueue because they have a dead letter, by its reason.",
            ["reason"],
            registry=registry,
        )
        self.waiting = Gauge(
            "backfill_watch_dead_letters_waiting",
            "Rows in the dead letters that wait for an operator (no automatic replay), by reason.",
            ["reason"],
            registry=registry,
        )
        self.duration = Gauge(
            "backfill_watch_last_pass_duration_seconds", "How long the last pass took.", registry=registry
        )
        self.high_water = Gauge(
            "backfill_watch_high_water_id",
            "The high-water mark: every candidate up to this row id was enqueued or left out.",
            registry=registry,
        )
        for result in PASS_RESULTS:
            self.passes.labels(result)
        for step in Step:
            self.enqueued.labels(step.value)
            self.last_enqueued.labels(step.value)
        _set_all(self.left_out, {})
        _set_all(self.waiting, {})
        for trigger in Trigger:
            self.last_replayed.labels(trigger.value)
            for reason in sorted(AUTO_REPLAYED):
                self.replayed.labels(reason, trigger.value)

    def set_holder(self, holder: str | None) -> None:
        self.lease_holder.clear()
        if holder:
            self.lease_holder.labels(holder).set(1)

    def observe_pass(self, record: PassRecord, replayed_by_reason: Mapping[tuple[str, str], int]) -> None:
        """One pass this watcher ran: its counters, and the last-pass gauges."""
        self.passes.labels("interrupted" if record.interrupted else "completed").inc()
        for step in Step:
            count = record.enqueued.get(step.value, 0)
            self.enqueued.labels(step.value).inc(count)
            self.last_enqueued.labels(step.value).set(count)
        for (reason, trigger), count in replayed_by_reason.items():
            self.replayed.labels(reason, trigger).inc(count)
        for trigger in Trigger:
            self.last_replayed.labels(trigger.value).set(record.replayed.get(trigger.value, 0))
        self.duration.set(record.finished_at - record.started_at)
        self.show(record)

    def show(self, record: PassRecord) -> None:
        """The cluster's last pass as recorded (by this watcher or another)."""
        self.high_water.set(record.high_water)
        if record.completed_at:
            self.last_pass.set(record.completed_at)
        _set_all(self.left_out, record.left_out)
        _set_all(self.waiting, record.waiting)


def _set_all(gauge: Gauge, values: Mapping[str, int]) -> None:
    """Every dead-letter reason (a bounded set, each shown even at 0), and any other named in `values`."""
    for reason in DlqReason:
        gauge.labels(reason.value).set(values.get(reason.value, 0))
    for label, value in values.items():
        gauge.labels(label).set(value)
