"""A RowProcessor wired as the worker wires it, against the doubles over loopback (pipeline tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from backfill.adapters.agent_zero import AgentZeroClient
from backfill.adapters.jellyfin import JellyfinClient
from backfill.adapters.postgrest import PostgrestCatalog
from backfill.adapters.transport import make_client
from backfill.adapters.youtube import YoutubeSearch
from backfill.core.outcome import RetryPolicy
from backfill.core.payload import LinkConfig
from backfill.enrich import Enricher
from backfill.pipeline import RowProcessor
from backfill.wiring import row_merger, row_reader
from backfill_doubles.agent_zero import AgentZeroDouble
from backfill_doubles.jellyfin import JellyfinDouble
from backfill_doubles.pmoves_yt import PmovesYtDouble
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.serve import serve

KEY, USER, SERVER, TOKEN = "jf-key", "ab" * 16, "cd" * 16, "agent-token"
LINKS = LinkConfig(public_base="https://watch.example.org")


@dataclass
class Rig:
    jellyfin: JellyfinDouble
    agent: AgentZeroDouble
    db: PostgrestDouble
    processor: RowProcessor
    youtube: PmovesYtDouble


@asynccontextmanager
async def pipeline_rig(
    nats_url: str, contracts_dir: Path, timeout: float, batch: int = 1
) -> AsyncIterator[Rig]:
    """The doubles over loopback (PMOVES.yt's too) and a RowProcessor wired as the worker wires it
    (`batch` > 1: the row reads, Jellyfin lookups and meta merges of rows handled together are batched)."""
    jellyfin = JellyfinDouble(KEY, USER, SERVER)
    agent = AgentZeroDouble(nats_url, contracts_dir, token=TOKEN)
    db = PostgrestDouble("svc")
    youtube = PmovesYtDouble()
    http = make_client(timeout)
    async with (
        serve(jellyfin.app()) as jf_url,
        serve(agent.app()) as a0_url,
        serve(db.app()) as db_url,
        serve(youtube.app()) as yt_url,
    ):
        catalog = PostgrestCatalog(http, db_url, "svc")
        jellyfin_client = JellyfinClient(http, jf_url, KEY, USER, batch=batch)
        videos = YoutubeSearch(http, yt_url)
        enricher = Enricher(jellyfin_client, None, LINKS, "pmoves", videos=videos)
        processor = RowProcessor(
            catalog,
            enricher,
            AgentZeroClient(http, a0_url, TOKEN),
            LINKS,
            RetryPolicy(),
            read_row=row_reader(catalog, batch),
            merge=row_merger(catalog, batch),
        )
        yield Rig(jellyfin, agent, db, processor, youtube)
    await http.aclose()
