"""An embedded PMOVES stack on loopback: nats-server, S3 (moto), and the Jellyfin, Agent Zero, PMOVES.yt
and PostgREST doubles, seeded with a mixed catalog (and PMOVES.yt with videos related to some of its
rows). Used by the end-to-end tests and the demo. The Discord double has publisher-discord's webhook in a
channel a bot may read (`DISCORD_WEBHOOK_URL`, `DISCORD_BOT_TOKEN`). With `discord_metrics`,
publisher-discord's metrics table exists in the catalog's backend.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from backfill_doubles import discord_metrics
from backfill_doubles.agent_zero import AgentZeroDouble
from backfill_doubles.contracts import CONTRACTS_DIR
from backfill_doubles.discord import DiscordSink
from backfill_doubles.jellyfin import JellyfinDouble
from backfill_doubles.natsserver import NatsServerProcess, free_port
from backfill_doubles.pmoves_yt import PmovesYtDouble
from backfill_doubles.postgres import (
    EmbeddedPostgres,
    create_schema,
    insert_rows,
    install_merge_function,
    read_rows,
)
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.seed import Seed, SeedRow, mixed_catalog
from backfill_doubles.serve import BackgroundServer


def in_fresh_loop(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion from sync code, even when the caller's thread has a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


JELLYFIN_KEY = "jellyfin-demo-key"
JELLYFIN_USER = "5f1a0c2e9b7d4e3fa1b2c3d4e5f60718"
JELLYFIN_SERVER = "0f4b8e5c2a9d4c7e8b1a2f3e4d5c6b7a"
SERVICE_KEY = "service-role-demo-key"
S3_ACCESS = "demo-access"
S3_SECRET = "demo-secret"  # a local moto server's fake credential
PUBLIC_BASE = "https://watch.example.org"
ORIGINAL_SENT_AT = "2025-06-01T10:00:00Z"
DISCORD_WEBHOOK_ID = "1300000000000000001"
DISCORD_WEBHOOK_TOKEN = "demo-token"
DISCORD_CHANNEL = "1300000000000000100"
DISCORD_BOT_TOKEN = "demo-bot-token"


@dataclass
class StackOptions:
    size: int = 260
    seed: int = 7
    rpc_installed: bool = True
    nats_url: str | None = None  # an existing server; else one is started
    contracts_dir: Path | None = CONTRACTS_DIR  # None: the Agent Zero double validates nothing
    catalog: str = "postgrest"  # or "postgres": a real embedded PostgreSQL read through CATALOG_DSN
    discord_metrics: bool = False  # create publisher-discord's metrics table (PMOVES ships no DDL)


@dataclass
class EmbeddedStack:
    options: StackOptions = field(default_factory=StackOptions)
    seed: Seed = field(init=False)
    jellyfin: JellyfinDouble = field(init=False)
    agent: AgentZeroDouble = field(init=False)
    catalog: PostgrestDouble = field(init=False)
    discord: DiscordSink = field(init=False)
    youtube: PmovesYtDouble = field(init=False)
    item_ids: dict[str, str] = field(default_factory=dict)  # seed key -> Jellyfin id
    rows: dict[int, SeedRow] = field(default_factory=dict)  # row id -> what it is
    originals: dict[int, dict[str, Any]] = field(default_factory=dict)  # row id -> row as seeded
    nats_url: str = ""
    s3_url: str = ""
    _servers: dict[str, BackgroundServer] = field(default_factory=dict)
    _postgres: EmbeddedPostgres | None = None
    _nats: NatsServerProcess | None = None
    _moto: ThreadedMotoServer | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> EmbeddedStack:
        """Start every part; when any part fails to start (or Ctrl-C arrives), stop what already runs."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> EmbeddedStack:
        self._tmp = tempfile.TemporaryDirectory(prefix="backfill-stack-")
        self.nats_url = self.options.nats_url or self._start_nats(Path(self._tmp.name))
        self.seed = mixed_catalog(self.options.size, self.options.seed)
        self._start_s3()
        self.jellyfin = JellyfinDouble(JELLYFIN_KEY, JELLYFIN_USER, JELLYFIN_SERVER, seed=self.options.seed)
        self.catalog = PostgrestDouble(SERVICE_KEY, rpc_installed=self.options.rpc_installed)
        self.agent = AgentZeroDouble(self.nats_url, self.options.contracts_dir)
        self._seed_jellyfin()
        self.discord = DiscordSink(seed=self.options.seed)
        self.discord.history.add_webhook(DISCORD_WEBHOOK_ID, DISCORD_WEBHOOK_TOKEN, DISCORD_CHANNEL)
        self.discord.history.add_bot(DISCORD_BOT_TOKEN, DISCORD_CHANNEL)  # View Channel, Read Message History
        self.youtube = PmovesYtDouble(seed=self.options.seed)
        for video in self.seed.videos:
            self.youtube.add_video(video.video_id, video.title, video.transcript)
        apps = {
            "jellyfin": self.jellyfin.app(),
            "agent_zero": self.agent.app(),
            "discord": self.discord.app(),
            "pmoves_yt": self.youtube.app(),
        }
        if self.options.catalog == "postgres":
            self._postgres = EmbeddedPostgres()
            self._postgres.start()
            in_fresh_loop(self._seed_postgres(self._postgres.dsn))
        else:
            self._seed_catalog()
            if self.options.discord_metrics:
                self.catalog.install_table(discord_metrics.POSTGREST_TABLE, "published_event_id")
            apps["catalog"] = self.catalog.app()
        for name, app in apps.items():
            server = BackgroundServer(app)
            server.start()
            self._servers[name] = server
        return self

    def _start_nats(self, root: Path) -> str:
        self._nats = NatsServerProcess(store=root / "jetstream")
        self._nats.start()
        return self._nats.url

    def _start_s3(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
        port = free_port()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._moto.start()
        self.s3_url = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=S3_ACCESS,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="outputs")
        for bucket, key in self.seed.objects:
            s3.put_object(Bucket=bucket, Key=key, Body=b"\x89PNG thumbnail", ContentType="image/png")

    def _seed_jellyfin(self) -> None:
        for item in self.seed.items:
            stored = self.jellyfin.add_item(
                item.name,
                run_time_ticks=item.ticks,
                year=item.year,
                premiere_date=item.premiere,
                image=item.image,
            )
            self.item_ids[item.key] = stored["Id"]
            if item.deleted:
                self.jellyfin.delete_item(stored["Id"])

    def _seed_catalog(self) -> None:
        for seed_row in self.seed.rows:
            row = self.catalog.add_row(**self._seed_row(seed_row))
            self.rows[row["id"]] = seed_row
            self.originals[row["id"]] = {**row, "meta": dict(row["meta"])}

    def _seed_row(self, seed_row: SeedRow) -> dict[str, Any]:
        meta = dict(seed_row.meta)
        if "jellyfin_item_id" in meta:
            meta["jellyfin_item_id"] = self.item_ids[meta["jellyfin_item_id"]]
        return {
            "title": seed_row.title,
            "namespace": seed_row.namespace,
            "content_url": seed_row.content_url,
            "status": seed_row.status,
            "meta": meta,
        }

    async def _seed_postgres(self, dsn: str) -> None:
        await create_schema(dsn)
        await install_merge_function(dsn)
        if self.options.discord_metrics:
            await discord_metrics.install(dsn)
        columns = [self._seed_row(r) for r in self.seed.rows]
        ids = await insert_rows(dsn, columns)
        for row_id, seed_row, row in zip(ids, self.seed.rows, columns, strict=True):
            self.rows[row_id] = seed_row
            self.originals[row_id] = {**row, "id": row_id}

    async def current_rows(self) -> list[dict[str, Any]]:
        """Every catalog row as it is now, whichever backend holds it."""
        if self._postgres is not None:
            return await read_rows(self._postgres.dsn)
        return list(self.catalog.rows.values())

    def discord_recorder(self) -> discord_metrics.Recorder:
        """How the publisher-discord double records into the metrics table of this stack's backend."""
        if self._postgres is not None:
            return discord_metrics.PostgresRecorder(self._postgres.dsn)
        return discord_metrics.PostgrestRecorder(self.urls["catalog"], SERVICE_KEY)

    @property
    def workdir(self) -> Path:
        """A temporary directory that lives as long as the stack."""
        assert self._tmp is not None, "stack not started"
        return Path(self._tmp.name)

    @property
    def urls(self) -> dict[str, str]:
        return {name: server.url for name, server in self._servers.items()}

    @property
    def discord_webhook(self) -> str:
        return f"{self.urls['discord']}/api/webhooks/{DISCORD_WEBHOOK_ID}/{DISCORD_WEBHOOK_TOKEN}"

    @property
    def postgres_dsn(self) -> str | None:
        return self._postgres.dsn if self._postgres else None

    def env(self, **overrides: str) -> dict[str, str]:
        """Every variable the producer and worker read, pointing at this stack."""
        urls = self.urls
        values = {
            "NATS_URL": self.nats_url,
            **({"CATALOG_DSN": self._postgres.dsn} if self._postgres else {"SUPA_REST_URL": urls["catalog"]}),
            "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY,
            "AGENT_ZERO_BASE_URL": urls["agent_zero"],
            "PMOVES_YT_URL": urls["pmoves_yt"],
            "JELLYFIN_URL": urls["jellyfin"],
            "JELLYFIN_PUBLIC_BASE_URL": PUBLIC_BASE,
            "JELLYFIN_API_KEY": JELLYFIN_KEY,
            "JELLYFIN_USER_ID": JELLYFIN_USER,
            "MINIO_ENDPOINT": self.s3_url,
            "MINIO_ACCESS_KEY": S3_ACCESS,
            "MINIO_SECRET_KEY": S3_SECRET,
            "MINIO_PUBLIC_BASE_URL": "https://media.example.org",
            "DISCORD_WEBHOOK_URL": self.discord_webhook,  # `producer verify` reads the channel back
            "DISCORD_BOT_TOKEN": DISCORD_BOT_TOKEN,
            "BACKFILL_LOG_FORMAT": "json",
            "BACKFILL_PACE_PER_MINUTE": "0",  # tests and the demo run unpaced unless they ask for a pace
        }
        return {**values, **overrides}

    def stop(self) -> None:
        for server in reversed(list(self._servers.values())):
            server.stop()
        self._servers.clear()
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._nats is not None:
            self._nats.close()
            self._nats = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
