"""Prometheus metrics: one object on a registry that tests can pass fresh. Base units, bounded labels."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from backfill.core.outcome import Resolution, Settled
from backfill.core.related import RESULTS as YOUTUBE_RESULTS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OUTCOMES: tuple[str, ...] = tuple(settled.value for settled in Settled)  # the `outcome` label
SERVICES = ("jellyfin", "agent_zero", "catalog", "storage")  # pmoves_yt appears once asked
RESOLUTIONS: tuple[str, ...] = tuple(method.value for method in Resolution)  # the `method` label


def package_version() -> str:
    try:
        return version("pmoves-jellyfin-backfill")
    except PackageNotFoundError:
        return "0+unknown"


def status_class(status: int | None) -> str:
    """`2xx`..`5xx`, or `error` when no HTTP answer came back (timeout, refused)."""
    return f"{status // 100}xx" if status else "error"


class Metrics:
    def __init__(self, registry: CollectorRegistry, backfill_version: str) -> None:
        self.registry = registry
        self.messages = Counter(
            "backfill_messages", "Backfill requests handled, by outcome.", ["outcome"], registry=registry
        )
        self.processing = Histogram(
            "backfill_processing_duration_seconds",
            "Time from fetch to settle, per message.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_requests = Counter(
            "backfill_upstream_requests",
            "HTTP requests to upstreams, by service and status class.",
            ["service", "status_class"],
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "backfill_upstream_request_duration_seconds",
            "HTTP request latency per upstream.",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.resolutions = Counter(
            "backfill_resolutions",
            "How rows were resolved (a search match with a storage thumbnail counts twice).",
            ["method"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "backfill_dead_letters",
            "Messages moved to the dead-letter stream, by reason.",
            ["reason"],
            registry=registry,
        )
        self.thumbnail_bucket_refused = Counter(
            "backfill_thumbnail_bucket_refused",
            "Storage thumbnail fallbacks skipped: the artifact's bucket is not in MINIO_THUMBNAIL_BUCKETS.",
            registry=registry,
        )
        self.youtube_links = Counter(
            "backfill_youtube_links",
            "Rows finished, by how YouTube linking ended: linked, no_match, rejected (4xx), gave_up"
            " (PMOVES.yt unavailable until the retries were spent; the row carries backfill_youtube_gap),"
            " off (not asked for).",
            ["result"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "backfill_in_flight", "Messages this worker is working on now.", registry=registry
        )
        self.consumer_pending = Gauge(
            "backfill_consumer_pending_messages",
            "Messages in the work stream not yet delivered.",
            registry=registry,
        )
        self.consumer_ack_pending = Gauge(
            "backfill_consumer_ack_pending_messages",
            "Messages delivered and not yet acknowledged.",
            registry=registry,
        )
        self.consumer_redelivered = Gauge(
            "backfill_consumer_redelivered_messages",
            "Messages delivered more than once, not yet acknowledged.",
            registry=registry,
        )
        self.dlq_depth = Gauge(
            "backfill_dlq_messages", "Messages held in the dead-letter stream.", registry=registry
        )
        self.paused = Gauge(
            "backfill_paused",
            "1 while the backfill is paused (`producer pause`: the switch, or the consumer on 2.11+).",
            registry=registry,
        )
        self.agent_zero_unavailable = Gauge(
            "backfill_agent_zero_unavailable",
            "1 while this worker holds Agent Zero unable to publish (its circuit is open: 503 'NATS"
            " controller not ready' and its health says NATS is disconnected, or it does not answer):"
            " republishes are held, nothing new is fetched.",
            registry=registry,
        )
        self.unconfirmed_publishes = Counter(
            "backfill_unconfirmed_publishes",
            "Publishes Agent Zero answered whose envelope was not seen on NATS within"
            " BACKFILL_ENVELOPE_WAIT_SECONDS (published again; the answered id is kept in the ledger).",
            registry=registry,
        )
        self.build = Info("backfill_build", "Build of the running worker.", registry=registry)
        self.build.info({"version": package_version(), "backfill_version": backfill_version})
        self._upstream_counters: dict[tuple[str, str], Counter] = {}
        self._upstream_histograms: dict[str, Histogram] = {}
        self._prime()

    def _prime(self) -> None:
        """Create every label set up front so dashboards show zeros instead of gaps."""
        for outcome in OUTCOMES:
            self.messages.labels(outcome)
        for method in RESOLUTIONS:
            self.resolutions.labels(method)
        for result in YOUTUBE_RESULTS:
            self.youtube_links.labels(result)
        for service in SERVICES:
            self.upstream_duration.labels(service)

    def observe_upstream(self, service: str, status: int | None, seconds: float) -> None:
        """Called for every HTTP request: label children are looked up once and kept."""
        key = (service, status_class(status))
        counter = self._upstream_counters.get(key)
        if counter is None:
            counter = self._upstream_counters[key] = self.upstream_requests.labels(*key)
        counter.inc()
        histogram = self._upstream_histograms.get(service)
        if histogram is None:
            histogram = self._upstream_histograms[service] = self.upstream_duration.labels(service)
        histogram.observe(seconds)
