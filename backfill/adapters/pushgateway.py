"""A Prometheus Pushgateway: an enqueue run's counts, so runs show on the backfill dashboard, and the
pause, so the alerts see it with no worker up (the `RunMetrics` port, `backfill.core.ports`).

Grouping: the job alone (`/metrics/job/<job>`), never the run id. A Pushgateway keeps every group
until someone deletes it, so one group per run would pile up stale runs forever and every dashboard
sum would add them together. With one group per job each run replaces the last one's figures, and the
run id rides along as a label of `backfill_producer_last_run_timestamp_seconds`, which names the run
the figures belong to. Runs of separate producer jobs (say a nightly and a manual one) use different
`job` names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from urllib.error import HTTPError

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from backfill.core.errors import UpstreamRejected, UpstreamUnavailable

RESULTS = ("candidates", "enqueued", "already_pending", "failed", "not_candidates")
SERVICE = "pushgateway"
DEFAULT_JOB = "backfill-producer"


def build_registry(
    run_id: str,
    counts: Mapping[str, object],
    finished_at: float,
    registry_factory: Callable[[], CollectorRegistry] = CollectorRegistry,
) -> CollectorRegistry:
    """A fresh registry holding one run's figures: rows by result, and when the run ended."""
    registry = registry_factory()
    rows = Gauge(
        "backfill_producer_rows",
        "Rows in the last enqueue run, by result.",
        ["result"],
        registry=registry,
    )
    for result in RESULTS:
        value = counts.get(result, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"count {result!r} must be an int, got {type(value).__name__}")
        rows.labels(result).set(value)
    last_run = Gauge(
        "backfill_producer_last_run_timestamp_seconds",
        "When the last enqueue run finished (Unix time), labelled with its run id.",
        ["run_id"],
        registry=registry,
    )
    last_run.labels(run_id).set(finished_at)
    return registry


async def push_paused(url: str, job: str, paused: bool, *, http_timeout: float = 10.0) -> None:
    """Set `backfill_paused` in the job's group (its other figures stay): 1 after `producer pause`."""
    registry = CollectorRegistry()
    Gauge("backfill_paused", "1 while the backfill is paused (producer pause).", registry=registry).set(
        int(paused)
    )
    await _push(url, job, registry, http_timeout)


async def push_counts(
    url: str,
    job: str,
    run_id: str,
    counts: Mapping[str, object],
    *,
    registry_factory: Callable[[], CollectorRegistry] = CollectorRegistry,
    http_timeout: float = 10.0,
    clock: Callable[[], float] = time.time,
) -> None:
    """POST the run's counts to the Pushgateway at `url`, replacing the job group's previous figures.

    Raises UpstreamUnavailable (timeout, refused, 429, 5xx) or UpstreamRejected (other 4xx, a URL that
    cannot be sent to), both UpstreamErrors with service "pushgateway".
    """
    await _push(url, job, build_registry(run_id, counts, clock(), registry_factory), http_timeout)


class Pushgateway:
    """The `RunMetrics` port on the Pushgateway at `url`, in the group of `job`."""

    def __init__(self, url: str, job: str = DEFAULT_JOB, *, http_timeout: float = 10.0) -> None:
        self.url = url
        self._job = job
        self._http_timeout = http_timeout

    async def push_counts(self, run_id: str, counts: Mapping[str, object]) -> None:
        await push_counts(self.url, self._job, run_id, counts, http_timeout=self._http_timeout)

    async def push_paused(self, paused: bool) -> None:
        await push_paused(self.url, self._job, paused, http_timeout=self._http_timeout)


async def _push(url: str, job: str, registry: CollectorRegistry, http_timeout: float) -> None:
    try:
        await asyncio.to_thread(pushadd_to_gateway, url, job=job, registry=registry, timeout=http_timeout)
    except HTTPError as exc:
        exc.close()  # the error holds the open response; release its socket now
        error = UpstreamRejected if 400 <= exc.code < 500 and exc.code != 429 else UpstreamUnavailable
        raise error(SERVICE, f"push answered {exc.code} {exc.reason}", status=exc.code) from exc
    except OSError as exc:  # URLError, connection refused and timeouts are all OSErrors
        raise UpstreamUnavailable(SERVICE, f"push failed: {exc}") from exc
    except ValueError as exc:  # a URL urllib cannot even send to
        raise UpstreamRejected(SERVICE, f"invalid Pushgateway URL: {exc}") from exc
