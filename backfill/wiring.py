"""Build from settings what the programs run: the adapters, the enricher, and the worker's row
processor with its pace, ledger and retry policy; the producer's run log, publisher-discord's metrics
table, Discord's read API and the Pushgateway. The one place where settings meet constructors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from backfill.adapters.agent_zero import AgentZeroClient
from backfill.adapters.agent_zero_circuit import AgentZeroCircuit
from backfill.adapters.batching import Batcher, WriteBatcher, each_on_failure
from backfill.adapters.discord import DiscordApi, RouteLimits
from backfill.adapters.jellyfin import JellyfinClient
from backfill.adapters.jetstream.bus import FIRST_CONNECT, Bus
from backfill.adapters.jetstream.layout import Layout, build_layout
from backfill.adapters.jetstream.pace import GlobalPace
from backfill.adapters.postgrest import PostgrestCatalog
from backfill.adapters.postgrest_discord_metrics import PostgrestMetricsTable
from backfill.adapters.postgrest_runs import PostgrestRunTable
from backfill.adapters.pushgateway import Pushgateway
from backfill.adapters.storage import ObjectStorage
from backfill.adapters.transport import HttpClient, Observer, make_client, no_observer
from backfill.adapters.youtube import YoutubeSearch
from backfill.core.circuit import CircuitRules
from backfill.core.model import Row
from backfill.core.outcome import RetryPolicy
from backfill.core.pace import NoPace, PaceConfig
from backfill.core.payload import LinkConfig, MetaPatch
from backfill.core.ports import (
    Catalog,
    ChannelReader,
    DeliveryLedger,
    EnvelopeWatch,
    MetricsTable,
    Pace,
    RunMetrics,
    RunTable,
)
from backfill.core.sigv4 import Credentials
from backfill.enrich import Enricher
from backfill.metrics import Metrics
from backfill.pipeline import RowProcessor
from backfill.republish import ConfirmRules, Republisher
from backfill.settings import (
    AgentZeroSettings,
    BackfillSettings,
    CatalogSettings,
    DiscordMetricsSettings,
    DiscordSettings,
    JellyfinSettings,
    NatsSettings,
    SettingsBundle,
    StorageSettings,
    WorkerSettings,
    YoutubeSettings,
)

log = logging.getLogger(__name__)
WORKER_FIRST_CONNECT = 30.0  # a worker's wait for NATS at start (it may still be starting beside it)


async def connect_bus(
    settings: SettingsBundle,
    name: str,
    *,
    reconnect_forever: bool = False,
    first_connect: float = FIRST_CONNECT,
) -> Bus:
    """NATS at NATS_URL, named `name` on the server, reached within BACKFILL_NATS_CONNECT_TIMEOUT (else
    `first_connect`: 2 s for a command) seconds or BusError; a worker then reconnects forever, a
    command gives up."""
    nats_cfg = settings.get(NatsSettings)
    return await Bus.connect(
        nats_cfg.url,
        name,
        reconnect_forever=reconnect_forever,
        first_connect=nats_cfg.connect_timeout or first_connect,
    )


def http_client(settings: SettingsBundle, max_connections: int = 100) -> HttpClient:
    """The process's one HTTP client, with BACKFILL_HTTP_TIMEOUT."""
    return make_client(settings.get(BackfillSettings).http_timeout, max_connections)


def links_from(jellyfin: JellyfinSettings) -> LinkConfig:
    return LinkConfig(
        public_base=jellyfin.public_base,
        deep_link_format=jellyfin.deep_link_format,
        server_id=jellyfin.server_id,
        image_max_width=jellyfin.image_max_width,
    )


async def build_catalog(
    settings: SettingsBundle, http: HttpClient, observe: Observer = no_observer
) -> Catalog:
    """PostgreSQL directly when CATALOG_DSN is set, else Supabase REST."""
    catalog = settings.get(CatalogSettings)
    if catalog.dsn is not None:
        from backfill.adapters.pgcatalog import PostgresCatalog, behind_transaction_pooler  # noqa: PLC0415 - lazy driver

        dsn = catalog.dsn.get_secret_value()
        catalog_pg: Catalog = await PostgresCatalog.open(
            dsn,
            page_size=catalog.page_size,
            observe=observe,
            transaction_pooler=behind_transaction_pooler(dsn, catalog.pool_mode),
        )
        return catalog_pg
    assert catalog.rest_url is not None and catalog.service_key is not None  # checked by load_settings
    return PostgrestCatalog(
        http,
        catalog.rest_url,
        catalog.service_key.get_secret_value(),
        merge_function=catalog.merge_function,
        page_size=catalog.page_size,
        observe=observe,
    )


@asynccontextmanager
async def open_catalog(
    settings: SettingsBundle, http: HttpClient, observe: Observer = no_observer
) -> AsyncIterator[Catalog]:
    """The configured catalog, closed (pool and all) when the block ends."""
    catalog = await build_catalog(settings, http, observe)
    try:
        yield catalog
    finally:
        await catalog.aclose()


def build_run_table(settings: SettingsBundle, http: HttpClient) -> RunTable:
    """The run log's table on the configured catalog: PostgreSQL directly with a DSN, else PostgREST."""
    catalog = settings.get(CatalogSettings)
    if catalog.dsn is not None:
        from backfill.adapters.pgruns import PostgresRunTable  # noqa: PLC0415 - the driver loads only when used

        timeout = settings.get(BackfillSettings).http_timeout
        return PostgresRunTable(catalog.dsn.get_secret_value(), timeout=timeout)
    assert catalog.rest_url is not None and catalog.service_key is not None  # checked by load_settings
    return PostgrestRunTable(http, catalog.rest_url, catalog.service_key.get_secret_value())


def build_metrics_table(settings: SettingsBundle, http: HttpClient) -> MetricsTable:
    """publisher-discord's metrics table on the configured catalog: PostgreSQL directly when a DSN is
    set, else PostgREST."""
    catalog = settings.get(CatalogSettings)
    table = settings.get(DiscordMetricsSettings).table
    if catalog.dsn is not None:
        from backfill.adapters.pgdiscord_metrics import PostgresMetricsTable  # noqa: PLC0415 - driver loads only when used

        timeout = settings.get(BackfillSettings).http_timeout
        return PostgresMetricsTable(catalog.dsn.get_secret_value(), table, timeout=timeout)
    assert catalog.rest_url is not None and catalog.service_key is not None  # checked by load_settings
    return PostgrestMetricsTable(http, catalog.rest_url, catalog.service_key.get_secret_value(), table)


def build_channel_reader(settings: SettingsBundle, http: HttpClient) -> ChannelReader:
    """Discord's read API as DISCORD_API_URL (or the webhook's origin) and DISCORD_BOT_TOKEN name it,
    reporting its rate-limit waits in the log."""
    discord = settings.get(DiscordSettings)

    def waiting(seconds: float, why: str) -> None:
        log.info("waiting %.1f s for %s", seconds, why)

    token = discord.bot_token.get_secret_value() if discord.bot_token else None
    return DiscordApi(http, discord.api, token, limits=RouteLimits(waiting=waiting))


def build_pushgateway(settings: SettingsBundle, url: str | None) -> RunMetrics | None:
    """The Pushgateway at `url` (a command's --pushgateway), else at BACKFILL_PUSHGATEWAY_URL; none
    when neither is set."""
    url = url or settings.get(BackfillSettings).pushgateway_url
    return Pushgateway(url) if url else None


def build_storage(
    settings: SettingsBundle,
    http: HttpClient,
    observe: Observer = no_observer,
    refused: Callable[[], None] = lambda: None,
) -> ObjectStorage | None:
    storage = settings.get(StorageSettings)
    if not storage.enabled or storage.access_key is None or storage.secret_key is None:
        return None
    creds = Credentials(
        storage.access_key.get_secret_value(), storage.secret_key.get_secret_value(), storage.region
    )
    return ObjectStorage(
        http,
        storage.endpoint_url,
        creds,
        storage.public_base_url,
        storage.presign_seconds,
        observe=observe,
        buckets=storage.thumbnail_buckets,
        refused=refused,
    )


def build_youtube(
    settings: SettingsBundle, http: HttpClient, observe: Observer = no_observer
) -> YoutubeSearch | None:
    """PMOVES.yt, when the command loaded its settings (the worker always does)."""
    youtube = settings.find(YoutubeSettings)
    return None if youtube is None else YoutubeSearch(http, youtube.url, observe=observe)


def build_jellyfin(
    settings: SettingsBundle, http: HttpClient, observe: Observer = no_observer, batch: int = 1
) -> JellyfinClient:
    """Jellyfin for JELLYFIN_USER_ID; `batch` > 1 shares one `ids=` lookup among the items asked for
    at the same time."""
    jellyfin = settings.get(JellyfinSettings)
    return JellyfinClient(
        http,
        jellyfin.url,
        jellyfin.api_key.get_secret_value(),
        jellyfin.user_id,
        observe=observe,
        batch=batch,
    )


def build_enricher(
    settings: SettingsBundle,
    http: HttpClient,
    observe: Observer = no_observer,
    batch: int = 1,
    refused: Callable[[], None] = lambda: None,
) -> Enricher:
    """`batch` > 1 shares one Jellyfin `ids=` lookup among the rows being enriched at the same time."""
    jellyfin = settings.get(JellyfinSettings)
    return Enricher(
        build_jellyfin(settings, http, observe, batch),
        build_storage(settings, http, observe, refused),
        links_from(jellyfin),
        settings.get(BackfillSettings).default_namespace,
        search_limit=jellyfin.search_limit,
        videos=build_youtube(settings, http, observe),
    )


def build_agent_zero(
    settings: SettingsBundle, http: HttpClient, observe: Observer = no_observer
) -> AgentZeroClient:
    agent = settings.get(AgentZeroSettings)
    token = agent.events_token.get_secret_value() if agent.events_token else None
    return AgentZeroClient(http, agent.base_url, token, observe=observe)


def layout_from(settings: SettingsBundle) -> Layout:
    return build_layout(settings.get(NatsSettings))


def retry_policy(settings: SettingsBundle, layout: Layout) -> RetryPolicy:
    """Retries within the consumer's `max_deliver` as the server has it (see `ensure_layout`)."""
    worker = settings.get(WorkerSettings)
    return RetryPolicy(
        base_delay=worker.retry_base_delay,
        max_delay=worker.retry_max_delay,
        max_attempts=layout.consumer.max_deliver or settings.get(NatsSettings).max_deliver,
        budget_seconds=worker.retry_budget_seconds,
    )


async def open_pace(settings: SettingsBundle, bus: Bus) -> Pace:
    """The global republish pace in its key-value bucket; none when BACKFILL_PACE_PER_MINUTE is 0."""
    worker = settings.get(WorkerSettings)
    if worker.pace_per_minute <= 0:
        return NoPace()
    return await GlobalPace.open(
        bus.js,
        worker.pace_bucket,
        PaceConfig(worker.pace_per_minute, worker.pace_burst),
        replicas=settings.get(NatsSettings).replicas,
    )


def row_reader(catalog: Catalog, batch: int) -> Callable[[int], Awaitable[Row | None]]:
    """Rows read in the same event-loop turn share one `fetch_rows` (`id=in.(...)`); 1 = one by one."""
    if batch <= 1:
        return catalog.get_row

    async def rows_by_id(ids: Sequence[int]) -> dict[int, Row]:
        return {row.id: row for row in await catalog.fetch_rows(ids)}

    return Batcher(each_on_failure(rows_by_id, catalog.get_row), batch).load


def row_merger(catalog: Catalog, batch: int) -> Callable[[int, MetaPatch], Awaitable[Row | None]]:
    """Merges submitted in the same event-loop turn share one `merge_many`; 1 = one by one."""
    if batch <= 1:
        return catalog.merge_meta
    return WriteBatcher(catalog.merge_many, batch).submit


def agent_zero_circuit(settings: SettingsBundle, agent: AgentZeroClient) -> AgentZeroCircuit:
    """The circuit in front of Agent Zero, probing its health with BACKFILL_AGENT_ZERO_PROBE_*."""
    config = settings.get(AgentZeroSettings)
    rules = CircuitRules(
        probe_first=config.probe_seconds, probe_max=max(config.probe_max_seconds, config.probe_seconds)
    )
    return AgentZeroCircuit(agent.nats_ready, rules)


def build_republisher(
    settings: SettingsBundle,
    agent: AgentZeroClient,
    gate: AgentZeroCircuit,
    watch: EnvelopeWatch,
    ledger: DeliveryLedger,
    pace: Pace,
    metrics: Metrics,
) -> Republisher:
    """Republishes through Agent Zero, confirmed by their envelopes (BACKFILL_ENVELOPE_WAIT_SECONDS)."""
    config = settings.get(AgentZeroSettings)
    rules = ConfirmRules(envelope_wait=config.envelope_wait, unconfirmed_limit=config.unconfirmed_limit)
    return Republisher(agent, watch, ledger, gate, pace, rules, metrics.unconfirmed_publishes.inc)


def build_processor(
    settings: SettingsBundle,
    catalog: Catalog,
    http: HttpClient,
    metrics: Metrics,
    policy: RetryPolicy,
    pace: Pace,
    republisher: Republisher,
) -> RowProcessor:
    """The worker's row processor: lookups, reads and merges batched by WORKER_LOOKUP_BATCH."""
    observe, batch = metrics.observe_upstream, settings.get(WorkerSettings).lookup_batch
    return RowProcessor(
        catalog,
        build_enricher(settings, http, observe, batch=batch, refused=metrics.thumbnail_bucket_refused.inc),
        republisher,
        links_from(settings.get(JellyfinSettings)),
        policy,
        pace=pace,
        read_row=row_reader(catalog, batch),
        merge=row_merger(catalog, batch),
    )
