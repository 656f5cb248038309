"""`producer watch` from start to stop: take the one-watcher lease (or wait for it, saying so), run a
pass every interval (`producer.watch_pass`), keep the lease renewed while passing and while waiting,
and stop between steps when asked, giving the lease back for the next watcher.

A failed pass (the catalog or NATS out of reach) is logged and counted, and the next one comes after the
interval: a watcher outlives its upstreams' outages like a worker does. Its last pass stays what the
`BackfillWatchStalled` alert reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Protocol

from backfill.adapters.jetstream.watchstate import Lease
from backfill.core.errors import BackfillError, BusError
from backfill.core.watch import PassRecord
from backfill.watch_metrics import WatchMetrics
from producer.watch_pass import PassOptions, PassTools, Tally, WatchPass

log = logging.getLogger("producer")
MIN_RETRY = 0.5  # seconds between two attempts at the lease, at least
NATS_RETRY = 2.0  # seconds before trying again when NATS did not answer


class Stopping(Protocol):
    """A stop request (SIGTERM/SIGINT), and a sleep it cuts short."""

    @property
    def requested(self) -> bool: ...

    async def sleep(self, seconds: float) -> bool: ...


class LeaseGuard:
    """Between pages and steps: go on unless stopped; renew the lease once a third of its TTL passed
    since the last renewal, and stop when it was lost."""

    def __init__(
        self, lease: Lease, holder: str, stop: Stopping, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lease = lease
        self._holder = holder
        self._stop = stop
        self._clock = clock
        self._renewed = clock()

    def renewed_now(self) -> None:
        self._renewed = self._clock()

    async def proceed(self) -> bool:
        if self._stop.requested:
            return False
        if self._clock() - self._renewed < self._lease.ttl / 3:
            return self._lease.held
        if not await self._lease.renew(self._holder):
            log.warning("lost the watch lease (not renewed within its TTL); stopping this pass")
            return False
        self._renewed = self._clock()
        return True


class Watcher:
    def __init__(
        self,
        tools: PassTools,
        options: PassOptions,
        lease: Lease,
        metrics: WatchMetrics,
        stop: Stopping,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tools = tools
        self._options = options
        self._lease = lease
        self._metrics = metrics
        self._stop = stop
        self._clock = clock
        self._guard = LeaseGuard(lease, options.holder, stop)
        self._seen_holder: str | None = None
        self._next_at: float | None = None  # when the next pass is due (None: now)
        self._passes = 0
        self.last: PassRecord | None = None  # the cluster's last pass, as recorded
        self.last_tally: Tally | None = None  # what this watcher's last pass did

    async def run(
        self, *, once: bool = False, full: bool = False, wait_for_lease: bool = True
    ) -> PassRecord | None:
        """Pass every interval until stopped (after one pass with `once`); the last pass recorded.
        Without `wait_for_lease`, a lease held elsewhere ends the run at once (no pass)."""
        self._metrics.interval.set(self._options.interval)
        self._metrics.last_pass.set(self._clock())  # until a pass (this one's or a predecessor's) says
        self._show(await self._tools.state.last_pass())
        try:
            while not self._stop.requested:
                try:
                    if not await self._hold(wait_for_lease):
                        break
                    due = 0.0 if once or self._next_at is None else self._next_at - self._clock()
                    if not await self._wait_holding(due):
                        continue
                    await self._pass(full, once)
                except BusError as exc:  # NATS out of reach: the connection comes back on its own
                    if once:
                        raise
                    log.warning("NATS did not answer the watcher; trying again", extra={"error": str(exc)})
                    await self._stop.sleep(NATS_RETRY)
                    continue
                self._next_at = self._clock() + self._options.interval
                full = False
                if once:
                    break
        finally:
            with contextlib.suppress(BusError):  # unreleased, it expires after its TTL
                await self._lease.release()
            self._metrics.lease_held.set(0)
        return self.last

    def _show(self, record: PassRecord | None) -> None:
        """The cluster's last pass as recorded (by this watcher or another): metrics and schedule."""
        if record is not None:
            self.last = record
            self._next_at = record.next_at
            self._metrics.show(record)

    async def _hold(self, wait: bool = True) -> bool:
        """Until the lease is ours (True) or a stop is requested (False), saying who holds it; without
        `wait`, False as soon as someone else holds it."""
        while not self._stop.requested:
            if self._lease.held:
                return True
            if await self._lease.acquire(self._options.holder):
                extra = {"holder": self._options.holder, "ttl": self._lease.ttl}
                log.info("took the watch lease", extra=extra)
                self._guard.renewed_now()
                self._metrics.lease_held.set(1)
                self._metrics.set_holder(self._options.holder)
                self._show(await self._tools.state.last_pass())
                return True
            await self._waiting()
            if not wait:
                return False
            await self._stop.sleep(max(min(self._lease.ttl / 3, self._options.interval), MIN_RETRY))
        return False

    async def _waiting(self) -> None:
        """Another watcher holds the lease: say so once per holder, and show the cluster's last pass."""
        current = await self._lease.holder()
        holder = current.holder if current is not None else None
        if holder != self._seen_holder and holder is not None:
            log.warning(
                "another watcher holds the watch lease; waiting until it is released or expires",
                extra={"holder": holder, "ttl": current.ttl if current else None},
            )
        self._seen_holder = holder
        self._metrics.lease_held.set(0)
        self._metrics.set_holder(holder)
        self._show(await self._tools.state.last_pass())

    async def _wait_holding(self, seconds: float) -> bool:
        """Sleep `seconds` renewing the lease; False when stopped or when the lease was lost meanwhile."""
        deadline = self._clock() + seconds
        while (left := deadline - self._clock()) > 0:
            if await self._stop.sleep(min(left, self._lease.ttl / 3)):
                return False
            if not await self._guard.proceed():
                return False
        return await self._guard.proceed()

    async def _pass(self, full: bool, once: bool) -> bool:
        """One pass, recorded; False when it failed (logged and counted, or raised with `once`). Each
        pass has its own run id (`<watcher's>-<n>`), stored on the rows it enqueues."""
        self._passes += 1
        options = dataclasses.replace(self._options, run_id=f"{self._options.run_id}-{self._passes}")
        runner = WatchPass(self._tools, options, self._guard, self._clock)
        try:
            record, tally = await runner.run(self.last, force_full=full)
        except BackfillError as exc:
            self._metrics.passes.labels("failed").inc()
            if once:
                raise
            log.error("watch pass failed; the next one comes after the interval: %s", exc)  # noqa: TRY400
            return False
        self._metrics.observe_pass(record, tally.replayed)
        self.last, self.last_tally = record, tally
        log.info(
            "watch pass done",
            extra={
                "enqueued": record.enqueued,
                "left_out": record.left_out,
                "replayed": record.replayed,
                "waiting": record.waiting,
                "full": record.full,
                "interrupted": record.interrupted,
                "high_water": record.high_water,
            },
        )
        return True
