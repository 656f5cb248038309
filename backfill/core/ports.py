"""The ports: what the orchestrators (`backfill.enrich`, `backfill.pipeline`) and the producer's commands
need of each collaborator.

Each port has its adapter in `backfill.adapters` (named below) and, for the tests, a double or an
in-process implementation. Adapters raise only `backfill.core.errors`: `UpstreamRejected` for an answer
retrying cannot change, `UpstreamUnavailable` for one it may, `BusError` for JetStream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from backfill.core.catalog import MergeItem, MergeResults
    from backfill.core.embeds import ChannelMessage
    from backfill.core.errors import UpstreamNotReady
    from backfill.core.ledger import Alive, FailedDelivery
    from backfill.core.matching import DateHint
    from backfill.core.model import DeliveryRecord, JellyfinItem, Row
    from backfill.core.pace import Turn
    from backfill.core.payload import MetaPatch
    from backfill.core.runs import RunRecord
    from backfill.core.wire import YoutubeLinking


class MediaLibrary(Protocol):
    """Jellyfin (`backfill.adapters.jellyfin.JellyfinClient`)."""

    async def get_item(self, item_id: str) -> JellyfinItem | None:
        """The item, or None when Jellyfin does not have it."""

    async def search(self, term: str, hint: DateHint | None, limit: int) -> list[JellyfinItem]:
        """Title search across all libraries, best first."""

    async def changed_since(self, since: datetime) -> list[JellyfinItem] | None:
        """The items added or saved at or after `since` (the library's own clock), or None when the
        server cannot say in a bounded number of requests (then assume anything may have changed)."""


class ThumbnailStore(Protocol):
    """MinIO or any S3 API (`backfill.adapters.storage.ObjectStorage`): the thumbnail fallback."""

    async def find_thumbnail(self, artifact_uri: str | None) -> str | None:
        """A URL Discord can fetch for the artifact's thumbnail, or None."""


class EventPublisher(Protocol):
    """Agent Zero (`backfill.adapters.agent_zero.AgentZeroClient`)."""

    async def publish(self, payload: dict[str, Any], correlation_id: str, source: str = "backfill") -> str:
        """Ask Agent Zero to publish one `content.published.v1` event; the envelope id it answered (its
        envelope may still never reach NATS). `UpstreamNotReady`: nothing was published;
        `OutcomeUnknown`: it may have been; `UpstreamRejected`: it refuses this event."""

    async def nats_ready(self) -> bool | None:
        """Whether Agent Zero can publish now (its health): True, False, or None when it does not say."""


class PublishGate(Protocol):
    """The circuit in front of Agent Zero (`backfill.adapters.agent_zero_circuit.AgentZeroCircuit`)."""

    async def admit(self) -> float:
        """Wait until a publish may go out; the seconds waited (never counted as retrying)."""

    async def not_ready(self, error: UpstreamNotReady) -> bool:
        """A publish found Agent Zero not ready. True: wait at `admit` and try again; False: retry."""

    def answered(self) -> None:
        """Agent Zero answered a publish with anything but "not ready"."""

    def abandoned(self) -> None:
        """An admitted publish ended without an answer either way."""


class Expectation(Protocol):
    """One delivery's wait for the envelope of its correlation id to reach NATS (a context manager:
    leaving it stops the wait)."""

    def arrived(self) -> str | None:
        """The id of the envelope seen so far, if any."""

    def blind(self) -> bool:
        """Whether this process's watch could have missed the envelope: its connection to NATS was down
        at some point of the wait."""

    async def wait(self, within: float) -> str | None:
        """The envelope's id once it has been seen (and recorded), or None after `within` seconds."""

    def __enter__(self) -> Expectation: ...

    def __exit__(self, *_exc: object) -> None: ...


class EnvelopeWatch(Protocol):
    """What reaches `content.published.v1` (`backfill.adapters.jetstream.envelopes.EnvelopeWatch`)."""

    def expect(self, correlation_id: str) -> Expectation:
        """Start waiting for this correlation id's envelope: one that arrives from now on is caught."""


class VideoSearch(Protocol):
    """PMOVES.yt (`backfill.adapters.youtube.YoutubeSearch`)."""

    async def search(self, query: str, linking: YoutubeLinking) -> list[dict[str, Any]]:
        """The results PMOVES.yt gives for `query`, best first. Raises `UpstreamRejected` on a 4xx and
        `UpstreamUnavailable` on a timeout, a 5xx or an unreadable answer."""


class Catalog(Protocol):
    """`studio_board`: `backfill.adapters.postgrest.PostgrestCatalog` (Supabase REST) and
    `backfill.adapters.pgcatalog.PostgresCatalog` (PostgreSQL directly)."""

    async def count_candidates(self, since_id: int = 0) -> int | None:
        """How many candidate rows lie above `since_id`; None when the backend cannot tell cheaply."""

    async def count_enriched(self) -> int | None:
        """How many published rows carry a Jellyfin public URL (any value): the published rows that
        are not candidates. None when the backend cannot tell cheaply."""

    async def count_youtube_gaps(self) -> int | None:
        """How many rows were backfilled without the YouTube links they asked for (PMOVES.yt stayed
        unavailable): rows whose `meta.backfill_youtube_gap` is set. None when the backend cannot tell."""

    def stream_candidates(self, since_id: int = 0, limit: int | None = None) -> AsyncIterator[list[Row]]:
        """Candidate rows in id order, page by page, memory flat in the size of the catalog."""

    def republished_rows(self, run_id: str | None = None) -> AsyncIterator[list[Row]]:
        """Rows carrying the id of the event their backfill republished (`meta.backfill_event_id`),
        only those of run `run_id` when given (`meta.backfill_run_id`), in id order, page by page."""

    async def fetch_rows(self, ids: Sequence[int]) -> list[Row]:
        """The rows with these ids that exist, in any order."""

    async def get_row(self, row_id: int) -> Row | None:
        """The current row, or None when it is gone."""

    async def merge_meta(self, row_id: int, patch: MetaPatch) -> Row | None:
        """Merge `patch` into the row's meta without losing other keys; None when the row is gone."""

    async def merge_many(self, items: Sequence[MergeItem]) -> MergeResults:
        """`merge_meta` for many rows (each at most once, else ValueError), in one statement when the
        backend can. A failure of the whole call is raised (it concerns every row); when the backend
        rejects the batch, each row is merged on its own so only the row at fault carries the error."""

    async def aclose(self) -> None:
        """Release what the adapter holds (pools, connections)."""


class Pace(Protocol):
    """The global republish pace (`backfill.adapters.jetstream.pace.GlobalPace`, `backfill.core.pace.NoPace`):
    turns for republish messages, and the fetch cap they imply."""

    def headroom(self) -> int: ...

    def turn(self) -> Turn: ...

    def close(self) -> None: ...


class DeliveryLedger(Protocol):
    """What JetStream does not remember about a delivery (`backfill.adapters.jetstream.ledger.Ledger`,
    `backfill.core.ledger.LocalLedger`)."""

    async def retrying_for(self, stream: str, seq: int, delivery: FailedDelivery) -> float: ...
    async def settled(self, stream: str, seq: int) -> None: ...
    async def note_alive(self, stream: str, seq: int, alive: Alive) -> None: ...
    async def alive(self, stream: str, seq: int) -> Alive | None: ...

    # Envelopes seen on NATS, by correlation id (first wins), and ids answered but never seen.
    async def envelope_seen(self, correlation_id: str) -> str | None: ...
    async def record_envelope(self, correlation_id: str, envelope_id: str) -> None: ...
    async def note_unconfirmed(self, correlation_id: str, envelope_id: str) -> int: ...


class RunTable(Protocol):
    """The optional run log's table, `backfill_runs` (`backfill.adapters.postgrest_runs.PostgrestRunTable`,
    `backfill.adapters.pgruns.PostgresRunTable`). Each write returns False when the table does not exist
    and raises an `UpstreamError` for any other failure."""

    async def upsert(self, record: RunRecord) -> bool: ...

    async def update(self, run_id: str, record: RunRecord) -> bool: ...


class MetricsTable(Protocol):
    """publisher-discord's metrics table, `DISCORD_METRICS_TABLE`
    (`backfill.adapters.postgrest_discord_metrics.PostgrestMetricsTable`,
    `backfill.adapters.pgdiscord_metrics.PostgresMetricsTable`). PMOVES ships no DDL for it: it may be
    missing. Any failure but a missing table is an `UpstreamError`."""

    name: str

    async def records(self, event_ids: Sequence[str]) -> list[DeliveryRecord] | None:
        """The records of these envelope ids (no ids: only whether the table exists); None when the
        table does not exist."""

    async def recorded_since(self, start: datetime) -> bool:
        """Whether publisher-discord recorded anything at all (any event) from `start` on."""


class RunMetrics(Protocol):
    """A Prometheus Pushgateway (`backfill.adapters.pushgateway.Pushgateway`): a producer run's figures
    and the pause, kept for the alerts while no worker runs. A failed push raises an `UpstreamError`."""

    async def push_counts(self, run_id: str, counts: Mapping[str, object]) -> None: ...

    async def push_paused(self, paused: bool) -> None: ...


class ChannelReader(Protocol):
    """Discord's REST API, read side (`backfill.adapters.discord.DiscordApi`): where `producer verify
    --source discord` finds the embeds publisher-discord posted."""

    async def webhook_channel(self, webhook_id: str, webhook_token: str) -> str:
        """The id of the channel the webhook posts to. Raises `NotFound` for an unknown webhook."""

    def messages_since(self, channel_id: str, after: int) -> AsyncIterator[list[ChannelMessage]]:
        """The channel's messages with a snowflake above `after`, page by page, newest first. Raises
        `UpstreamRejected` (401, 403: what to fix), `NotFound` (404) or `UpstreamUnavailable`."""
