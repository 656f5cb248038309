"""Build the adapters from settings: the one place where settings meet constructors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from backfill.adapters.agent_zero import AgentZeroClient
from backfill.adapters.jellyfin import JellyfinClient
from backfill.adapters.jetstream.layout import Layout, build_layout
from backfill.adapters.postgrest import PostgrestCatalog
from backfill.adapters.storage import ObjectStorage
from backfill.adapters.transport import HttpClient, Observer, no_observer
from backfill.adapters.youtube import YoutubeSearch
from backfill.core.payload import LinkConfig
from backfill.core.ports import Catalog
from backfill.core.sigv4 import Credentials
from backfill.enrich import Enricher
from backfill.settings import (
    AgentZeroSettings,
    BackfillSettings,
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    SettingsBundle,
    StorageSettings,
    YoutubeSettings,
)


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


def build_enricher(
    settings: SettingsBundle,
    http: HttpClient,
    observe: Observer = no_observer,
    batch: int = 1,
    refused: Callable[[], None] = lambda: None,
) -> Enricher:
    """`batch` > 1 shares one Jellyfin `ids=` lookup among the rows being enriched at the same time."""
    jellyfin = settings.get(JellyfinSettings)
    client = JellyfinClient(
        http,
        jellyfin.url,
        jellyfin.api_key.get_secret_value(),
        jellyfin.user_id,
        observe=observe,
        batch=batch,
    )
    return Enricher(
        client,
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
