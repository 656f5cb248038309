"""Settings read once from the environment, with the PMOVES variable names.

Each program loads only the groups its command needs (`load_settings`); every problem across those
groups is reported in one `ConfigError` that names the variables and never echoes their values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from backfill.core.errors import ConfigError


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _nats_urls(value: str) -> str:
    for server in value.split(","):
        parts = urlsplit(server.strip())
        if parts.scheme not in {"nats", "tls", "ws", "wss"} or not parts.netloc:
            raise ValueError("must be nats://host:port (comma-separated for several servers)")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
NatsUrl = Annotated[str, AfterValidator(_nats_urls)]


class _Group(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True, env_ignore_empty=True, extra="ignore", populate_by_name=False
    )


class NatsSettings(_Group):
    """Where JetStream is and how the backfill streams and consumer are laid out."""

    url: NatsUrl = Field("nats://localhost:4222", validation_alias="NATS_URL")
    # how long a program waits for its first connection before it exits 3 (backfill/wiring.py has the
    # defaults: 2 s for a producer command, 30 s for a worker)
    connect_timeout: float | None = Field(
        None, validation_alias="BACKFILL_NATS_CONNECT_TIMEOUT", gt=0, le=3600
    )
    stream: str = Field("BACKFILL", validation_alias="BACKFILL_STREAM", pattern=r"^[A-Za-z0-9_-]+$")
    dlq_stream: str = Field(
        "BACKFILL_DLQ", validation_alias="BACKFILL_DLQ_STREAM", pattern=r"^[A-Za-z0-9_-]+$"
    )
    consumer: str = Field(
        "backfill-workers", validation_alias="BACKFILL_CONSUMER", pattern=r"^[A-Za-z0-9_-]+$"
    )
    subject_prefix: str = Field(
        "backfill", validation_alias="BACKFILL_SUBJECT_PREFIX", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
    )
    ack_wait: float = Field(60.0, validation_alias="BACKFILL_ACK_WAIT", gt=0)
    max_deliver: int = Field(10, validation_alias="BACKFILL_MAX_DELIVER", ge=2)
    max_ack_pending: int = Field(1000, validation_alias="BACKFILL_MAX_ACK_PENDING", ge=1)
    dlq_max_age_days: float = Field(30.0, validation_alias="BACKFILL_DLQ_MAX_AGE_DAYS", gt=0)
    replicas: int = Field(1, validation_alias="BACKFILL_STREAM_REPLICAS", ge=1, le=5)
    control_bucket: str = Field(  # `producer pause` on every server: backfill/adapters/jetstream/pausing.py
        "BACKFILL_CONTROL", validation_alias="BACKFILL_CONTROL_BUCKET", pattern=r"^[A-Za-z0-9_-]+$"
    )


class CatalogSettings(_Group):
    """Where `studio_board` lives: Supabase REST (PostgREST), or PostgreSQL directly when a DSN is set."""

    rest_url: HttpUrl | None = Field(
        None, validation_alias=AliasChoices("SUPA_REST_URL", "SUPABASE_REST_URL")
    )
    # SUPABASE_SERVICE_KEY is the name in PMOVES' env.shared. The first name set (and not empty) wins, so
    # SUPABASE_SERVICE_ROLE_KEY when both are.
    service_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY"),
        min_length=1,
    )
    dsn: SecretStr | None = Field(None, validation_alias=AliasChoices("CATALOG_DSN", "SUPABASE_DB_URL"))
    pool_mode: Literal["auto", "session", "transaction"] = Field("auto", validation_alias="CATALOG_POOL_MODE")
    # Not a setting: the merge functions write `public.studio_board`, so reads must come from there too.
    # Kept only to refuse it clearly (it once changed what was read, not what was written).
    table: str | None = Field(None, validation_alias="BACKFILL_TABLE")
    merge_function: str = Field(
        "backfill_merge_meta", validation_alias="BACKFILL_MERGE_FUNCTION", pattern=r"^[a-z_][a-z0-9_]*$"
    )
    page_size: int = Field(1000, validation_alias="BACKFILL_PAGE_SIZE", ge=1, le=1000)


class JellyfinSettings(_Group):
    """The Jellyfin server read for metadata, and the public base Discord and browsers reach."""

    url: HttpUrl = Field(validation_alias="JELLYFIN_URL")
    public_base_url: HttpUrl | None = Field(None, validation_alias="JELLYFIN_PUBLIC_BASE_URL")
    api_key: SecretStr = Field(validation_alias="JELLYFIN_API_KEY", min_length=1)
    user_id: str = Field(validation_alias="JELLYFIN_USER_ID", pattern=r"^[0-9A-Fa-f-]{32,36}$")
    server_id: str | None = Field(None, validation_alias="JELLYFIN_SERVER_ID")
    deep_link_format: str = Field(
        "{base}/web/#/details?id={id}&serverId={server_id}", validation_alias="JELLYFIN_DEEP_LINK_FORMAT"
    )
    image_max_width: int = Field(640, validation_alias="JELLYFIN_IMAGE_MAX_WIDTH", ge=16)
    search_limit: int = Field(20, validation_alias="JELLYFIN_SEARCH_LIMIT", ge=2, le=200)

    @property
    def public_base(self) -> str:
        return self.public_base_url or self.url


class AgentZeroSettings(_Group):
    """Agent Zero's event gateway, which publishes envelopes on core NATS, and how a republish through
    it is confirmed (its envelope seen on NATS) and its outages waited out (the circuit)."""

    base_url: HttpUrl = Field("http://localhost:8080", validation_alias="AGENT_ZERO_BASE_URL")
    # Sent as x-agent-token when set; Agent Zero (PMOVES.AI 09f0ad73) checks no token at all.
    events_token: SecretStr | None = Field(None, validation_alias="AGENT_ZERO_EVENTS_TOKEN")
    envelope_wait: float = Field(5.0, validation_alias="BACKFILL_ENVELOPE_WAIT_SECONDS", gt=0, le=60)
    unconfirmed_limit: int = Field(3, validation_alias="BACKFILL_UNCONFIRMED_LIMIT", ge=1)
    probe_seconds: float = Field(2.0, validation_alias="BACKFILL_AGENT_ZERO_PROBE_SECONDS", gt=0)
    probe_max_seconds: float = Field(30.0, validation_alias="BACKFILL_AGENT_ZERO_PROBE_MAX_SECONDS", gt=0)


class StorageSettings(_Group):
    """Object storage for the thumbnail fallback; disabled when MINIO_ENDPOINT is unset."""

    endpoint: str | None = Field(None, validation_alias="MINIO_ENDPOINT")
    access_key: SecretStr | None = Field(None, validation_alias="MINIO_ACCESS_KEY")
    secret_key: SecretStr | None = Field(None, validation_alias="MINIO_SECRET_KEY")
    secure: bool = Field(False, validation_alias="MINIO_SECURE")
    region: str = Field("us-east-1", validation_alias="AWS_DEFAULT_REGION")
    public_base_url: HttpUrl | None = Field(None, validation_alias="MINIO_PUBLIC_BASE_URL")
    presign_seconds: int = Field(
        7 * 24 * 3600, validation_alias="MINIO_PRESIGN_SECONDS", ge=60, le=7 * 24 * 3600
    )
    # Only these buckets are looked into (HEAD) and handed out (URL, presigned or public): a row's
    # `s3://` artifact URI may name any bucket, and every fallback signs with our credentials.
    thumbnail_buckets_csv: str = Field(
        "outputs",
        validation_alias="MINIO_THUMBNAIL_BUCKETS",
        pattern=r"^[a-z0-9][a-z0-9.-]{1,62}(,[a-z0-9][a-z0-9.-]{1,62})*$",
    )

    @property
    def thumbnail_buckets(self) -> frozenset[str]:
        return frozenset(self.thumbnail_buckets_csv.split(","))

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None

    @property
    def endpoint_url(self) -> str:
        """`MINIO_ENDPOINT` may be `host:port` (PMOVES style) or a full URL."""
        assert self.endpoint is not None
        if "://" in self.endpoint:
            return self.endpoint.rstrip("/")
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"


class YoutubeSettings(_Group):
    """PMOVES.yt, asked for related videos when a request carries `--link-youtube` (no credentials)."""

    url: HttpUrl = Field("http://localhost:8077", validation_alias="PMOVES_YT_URL")


class DiscordMetricsSettings(_Group):
    """Where PMOVES' publisher-discord records whether Discord accepted each embed (`producer verify`)."""

    table: str = Field(
        "publisher_discord_metrics",
        validation_alias="DISCORD_METRICS_TABLE",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )


class WatchSettings(_Group):
    """`producer watch`: how often it looks for new candidates and late Jellyfin items, and its lease."""

    interval: float = Field(300.0, validation_alias="BACKFILL_WATCH_INTERVAL", gt=0, le=86400)
    full_every: float = Field(3600.0, validation_alias="BACKFILL_WATCH_FULL_EVERY", gt=0)
    max_replays: int = Field(5, validation_alias="BACKFILL_WATCH_MAX_REPLAYS", ge=0)
    replay_backoff: float = Field(3600.0, validation_alias="BACKFILL_WATCH_REPLAY_BACKOFF", gt=0)
    replay_backoff_max: float = Field(86400.0, validation_alias="BACKFILL_WATCH_REPLAY_BACKOFF_MAX", gt=0)
    lease_seconds: float = Field(60.0, validation_alias="BACKFILL_WATCH_LEASE_SECONDS", ge=1, le=3600)
    bucket: str = Field(
        "BACKFILL_WATCH", validation_alias="BACKFILL_WATCH_BUCKET", pattern=r"^[A-Za-z0-9_-]+$"
    )
    lease_bucket: str = Field(
        "BACKFILL_WATCH_LEASE", validation_alias="BACKFILL_WATCH_LEASE_BUCKET", pattern=r"^[A-Za-z0-9_-]+$"
    )
    metrics_port: int = Field(9109, validation_alias="BACKFILL_WATCH_METRICS_PORT", ge=0, le=65535)
    metrics_host: str = Field("0.0.0.0", validation_alias="BACKFILL_WATCH_METRICS_HOST")  # noqa: S104 - containers
    watcher_id: str | None = Field(None, validation_alias="BACKFILL_WATCH_ID")


class BackfillSettings(_Group):
    """What the backfill writes and how hard it drives the upstreams."""

    default_namespace: str = Field("pmoves", validation_alias="DEFAULT_NAMESPACE", min_length=1)
    version: str = Field("2025-10-14", validation_alias="BACKFILL_VERSION", pattern=r"^[A-Za-z0-9._-]+$")
    http_timeout: float = Field(10.0, validation_alias="BACKFILL_HTTP_TIMEOUT", gt=0)
    log_format: str = Field("auto", validation_alias="BACKFILL_LOG_FORMAT", pattern=r"^(auto|json|text)$")
    # Where `producer enqueue | pause | resume` push their figures when no --pushgateway is given: with
    # it set, a pause stays visible to the alerts after the last worker is gone.
    pushgateway_url: HttpUrl | None = Field(None, validation_alias="BACKFILL_PUSHGATEWAY_URL")


G = TypeVar("G", bound=_Group)


def variables(group: type[_Group], *fields: str) -> tuple[str, ...]:
    """The environment variables that set these fields of `group`, each field's names in order."""
    names: list[str] = []
    for name in fields:
        alias = group.model_fields[name].validation_alias
        names += [str(n) for n in alias.choices] if isinstance(alias, AliasChoices) else [str(alias)]
    return tuple(names)


def _alias_names(group: type[_Group], loc: str) -> str:
    for field in group.model_fields.values():
        alias = field.validation_alias
        names = list(alias.choices) if isinstance(alias, AliasChoices) else [alias]
        if loc in names:
            return " (or ".join(str(n) for n in names) + ")" * (len(names) - 1)
    return loc


def _describe(group: type[_Group], error: Any) -> str:
    loc = str(error["loc"][0]) if error["loc"] else "?"
    message = "is required but not set" if error["type"] == "missing" else error["msg"]
    return f"{_alias_names(group, loc)}: {message}"


def _catalog_problems(catalog: CatalogSettings) -> list[str]:
    if catalog.table is not None:
        return [
            "BACKFILL_TABLE: not supported; the backfill reads and writes public.studio_board, the table"
            " its merge functions write (unset it)"
        ]
    if catalog.dsn is not None:
        dsn = catalog.dsn.get_secret_value()
        ok = dsn.startswith(("postgres://", "postgresql://"))
        return [] if ok else ["CATALOG_DSN (or SUPABASE_DB_URL): must be a postgresql:// URL"]
    problems = []
    if catalog.rest_url is None:
        problems.append("SUPA_REST_URL (or SUPABASE_REST_URL): is required but not set (or set CATALOG_DSN)")
    if catalog.service_key is None:
        problems.append(
            "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SERVICE_KEY): is required but not set"
            " (or set CATALOG_DSN)"
        )
    return problems


def _storage_problems(storage: StorageSettings) -> list[str]:
    if storage.enabled and (storage.access_key is None or storage.secret_key is None):
        return ["MINIO_ACCESS_KEY and MINIO_SECRET_KEY: required when MINIO_ENDPOINT is set"]
    return []


class SettingsBundle:
    """The groups one command loaded, looked up by type."""

    def __init__(self, groups: Sequence[_Group]) -> None:
        self._groups = {type(g): g for g in groups}

    def get(self, group: type[G]) -> G:
        found = self._groups[group]
        assert isinstance(found, group)
        return found

    def find(self, group: type[G]) -> G | None:
        """The group when this command loaded it, else None."""
        return self.get(group) if group in self._groups else None


def load_settings(groups: Sequence[type[_Group]]) -> SettingsBundle:
    """Build each settings group from the environment; raise one ConfigError listing every problem."""
    problems: list[str] = []
    built: list[_Group] = []
    for group in groups:
        try:
            instance = group()
        except ValidationError as exc:
            problems.extend(_describe(group, err) for err in exc.errors(include_input=False))
            continue
        if isinstance(instance, StorageSettings):
            problems.extend(_storage_problems(instance))
        if isinstance(instance, CatalogSettings):
            problems.extend(_catalog_problems(instance))
        built.append(instance)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return SettingsBundle(built)


class WorkerSettings(_Group):
    """How one worker process consumes; every replica may set its own."""

    concurrency: int = Field(128, validation_alias="WORKER_CONCURRENCY", ge=1, le=1024)
    fetch_batch: int = Field(32, validation_alias="WORKER_FETCH_BATCH", ge=1, le=1000)
    fetch_timeout: float = Field(2.0, validation_alias="WORKER_FETCH_TIMEOUT", gt=0, le=30)
    lookup_batch: int = Field(40, validation_alias="WORKER_LOOKUP_BATCH", ge=1, le=1000)
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field("auto", validation_alias="WORKER_EVENT_LOOP")
    grace_seconds: float = Field(25.0, validation_alias="WORKER_GRACE_SECONDS", ge=0)
    metrics_port: int = Field(9108, validation_alias="WORKER_METRICS_PORT", ge=0, le=65535)
    metrics_host: str = Field("0.0.0.0", validation_alias="WORKER_METRICS_HOST")  # noqa: S104 - containers
    stats_interval: float = Field(15.0, validation_alias="WORKER_STATS_INTERVAL", gt=0)
    worker_id: str | None = Field(None, validation_alias="WORKER_ID")
    sweep_interval: float = Field(60.0, validation_alias="WORKER_SWEEP_INTERVAL", gt=0)
    pace_per_minute: float = Field(30.0, validation_alias="BACKFILL_PACE_PER_MINUTE", ge=0)
    pace_burst: int = Field(5, validation_alias="BACKFILL_PACE_BURST", ge=1)
    pace_bucket: str = Field(
        "BACKFILL_PACE", validation_alias="BACKFILL_PACE_BUCKET", pattern=r"^[A-Za-z0-9_-]+$"
    )
    ledger_bucket: str = Field(
        "BACKFILL_LEDGER", validation_alias="BACKFILL_LEDGER_BUCKET", pattern=r"^[A-Za-z0-9_-]+$"
    )
    retry_base_delay: float = Field(1.0, validation_alias="BACKFILL_RETRY_BASE_DELAY", gt=0)
    retry_max_delay: float = Field(60.0, validation_alias="BACKFILL_RETRY_MAX_DELAY", gt=0)
    retry_budget_seconds: float = Field(6 * 3600.0, validation_alias="BACKFILL_RETRY_BUDGET_SECONDS", gt=0)


# Discord's read API, for `producer verify --source discord` (docs/upstreams.md §4).

_WEBHOOK_PATH = re.compile(r"^(?P<api>.*/api)(?:/v\d+)?/webhooks/(?P<id>\d{1,20})/(?P<token>[^/?#]+)/?$")
DISCORD_API_DEFAULT = "https://discord.com/api"


def _webhook_url(value: SecretStr) -> SecretStr:
    parts = urlsplit(value.get_secret_value())
    if parts.scheme not in {"http", "https"} or not parts.netloc or not _WEBHOOK_PATH.match(parts.path):
        raise ValueError("must be a webhook URL, https://discord.com/api/webhooks/<id>/<token>")
    return value


class DiscordSettings(_Group):
    """Where publisher-discord posts (its webhook) and how to read that channel back (a bot's token)."""

    webhook_url: Annotated[SecretStr, AfterValidator(_webhook_url)] | None = Field(
        None, validation_alias="DISCORD_WEBHOOK_URL"
    )
    api_url: HttpUrl | None = Field(None, validation_alias="DISCORD_API_URL")
    bot_token: SecretStr | None = Field(None, validation_alias="DISCORD_BOT_TOKEN", min_length=1)
    channel_id: str | None = Field(None, validation_alias="DISCORD_CHANNEL_ID", pattern=r"^\d{1,20}$")

    @property
    def webhook(self) -> tuple[str, str] | None:
        """The webhook's (id, token), from DISCORD_WEBHOOK_URL."""
        if self.webhook_url is None:
            return None
        found = _WEBHOOK_PATH.match(urlsplit(self.webhook_url.get_secret_value()).path)
        assert found is not None  # checked by _webhook_url
        return found["id"], found["token"]

    @property
    def api(self) -> str:
        """DISCORD_API_URL; else the webhook URL's origin and its `/api` (a proxy or a double works with
        no other setting); else Discord's."""
        if self.api_url is not None:
            return self.api_url
        if self.webhook_url is None:
            return DISCORD_API_DEFAULT
        parts = urlsplit(self.webhook_url.get_secret_value())
        found = _WEBHOOK_PATH.match(parts.path)
        assert found is not None
        return f"{parts.scheme}://{parts.netloc}{found['api']}"

    @property
    def readable(self) -> bool:
        """Whether the channel can be read: a bot token, and a channel (given, or the webhook's)."""
        return self.bot_token is not None and (self.channel_id is not None or self.webhook_url is not None)
