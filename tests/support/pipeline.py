"""A RowProcessor wired as the worker wires it, against the doubles over loopback (pipeline tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import nats

from backfill.adapters.agent_zero import AgentZeroClient
from backfill.adapters.agent_zero_circuit import AgentZeroCircuit
from backfill.adapters.jellyfin import JellyfinClient
from backfill.adapters.jetstream.envelopes import EnvelopeWatch
from backfill.adapters.postgrest import PostgrestCatalog
from backfill.adapters.transport import make_client
from backfill.adapters.youtube import YoutubeSearch
from backfill.core.circuit import CircuitRules
from backfill.core.ledger import LocalLedger
from backfill.core.outcome import RetryPolicy
from backfill.core.pace import NoPace
from backfill.core.payload import LinkConfig
from backfill.enrich import Enricher
from backfill.pipeline import RowProcessor
from backfill.republish import ConfirmRules, Republisher
from backfill.wiring import row_merger, row_reader
from backfill_doubles.agent_zero import AgentZeroDouble
from backfill_doubles.jellyfin import JellyfinDouble
from backfill_doubles.pmoves_yt import PmovesYtDouble
from backfill_doubles.postgrest import PostgrestDouble
from backfill_doubles.serve import serve

KEY, USER, SERVER, TOKEN = "jf-key", "ab" * 16, "cd" * 16, "agent-token"
ENVELOPE_WAIT = 0.5  # seconds: what the rig's republishes wait for their envelope
PROBE = CircuitRules(probe_first=0.1, probe_max=0.4)
LINKS = LinkConfig(public_base="https://watch.example.org")


@dataclass
class Rig:
    jellyfin: JellyfinDouble
    agent: AgentZeroDouble
    db: PostgrestDouble
    processor: RowProcessor
    youtube: PmovesYtDouble
    ledger: LocalLedger  # what the envelope watch recorded
    circuit: AgentZeroCircuit
    agent_url: str


@asynccontextmanager
async def pipeline_rig(
    nats_url: str,
    contracts_dir: Path,
    timeout: float,
    batch: int = 1,
    agent: AgentZeroDouble | None = None,
) -> AsyncIterator[Rig]:
    """The doubles over loopback (PMOVES.yt's too) and a RowProcessor wired as the worker wires it
    (`batch` > 1: the row reads, Jellyfin lookups and meta merges of rows handled together are batched),
    its republishes confirmed by a real envelope watch on NATS. `agent`: an Agent Zero double of the
    test's own (its NATS link through a relay, a shorter reconnect budget)."""
    jellyfin = JellyfinDouble(KEY, USER, SERVER)
    agent = agent or AgentZeroDouble(nats_url, contracts_dir)
    db = PostgrestDouble("svc")
    youtube = PmovesYtDouble()
    http = make_client(timeout)
    nc = await nats.connect(nats_url)
    ledger = LocalLedger()
    watch = EnvelopeWatch(ledger)
    await watch.start(nc)
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
        client = AgentZeroClient(http, a0_url, TOKEN)
        circuit = AgentZeroCircuit(client.nats_ready, PROBE)
        rules = ConfirmRules(envelope_wait=ENVELOPE_WAIT)
        republisher = Republisher(client, watch, ledger, circuit, NoPace(), rules)
        processor = RowProcessor(
            catalog,
            enricher,
            republisher,
            LINKS,
            RetryPolicy(),
            read_row=row_reader(catalog, batch),
            merge=row_merger(catalog, batch),
        )
        yield Rig(jellyfin, agent, db, processor, youtube, ledger, circuit, a0_url)
        circuit.stop()
    await watch.stop()
    await nc.drain()
    await http.aclose()
