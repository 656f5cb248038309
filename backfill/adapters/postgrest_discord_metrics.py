"""PMOVES' publisher-discord metrics table (`DISCORD_METRICS_TABLE`, default `publisher_discord_metrics`)
through PostgREST (Supabase REST): the `MetricsTable` port (`backfill.core.ports`) `producer verify`
reads; on a catalog configured with a DSN, `backfill.adapters.pgdiscord_metrics` reads it directly.

PMOVES ships no DDL for the table (docs/upstreams.md §8): it may be missing, which `records` reports as
None (PostgREST 404 `PGRST205` / `42P01`); any other failure is an `UpstreamError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from backfill.adapters.postgrest import auth_headers, table_missing
from backfill.adapters.transport import HttpClient, Upstream
from backfill.core.errors import UpstreamUnavailable
from backfill.core.model import DeliveryRecord

SERVICE = "catalog"
COLUMNS = ("published_event_id", "webhook_success", "channel", "published_at")
IDS_PER_REQUEST = 100  # 36-character ids, quoted: about 4 KB of query string
_records_decoder = msgspec.json.Decoder(list[DeliveryRecord])


class PostgrestMetricsTable:
    """The metrics table through PostgREST (Supabase REST), with the service key."""

    def __init__(self, http: HttpClient, rest_url: str, service_key: str, table: str) -> None:
        self.name = table
        self._up = Upstream(http, SERVICE)
        self._url = f"{rest_url.rstrip('/')}/{table}"
        self._headers = auth_headers(service_key)

    async def records(self, event_ids: Sequence[str]) -> list[DeliveryRecord] | None:
        if not event_ids:
            return await self._read({"limit": "0"})
        found: list[DeliveryRecord] = []
        for start in range(0, len(event_ids), IDS_PER_REQUEST):
            chunk = event_ids[start : start + IDS_PER_REQUEST]
            quoted = ",".join('"' + event_id.replace('"', "") + '"' for event_id in chunk)
            page = await self._read({"published_event_id": f"in.({quoted})"})
            if page is None:
                return None
            found.extend(page)
        return found

    async def recorded_since(self, start: datetime) -> bool:
        found = await self._read({"published_at": f"gte.{start.isoformat()}", "limit": "1"})
        return bool(found)

    async def _read(self, filters: dict[str, str]) -> list[DeliveryRecord] | None:
        params = {"select": ",".join(COLUMNS), **filters}
        response = await self._up.read("GET", self._url, params=params, headers=self._headers)
        if table_missing(response):
            return None
        self._up.check(response)
        try:
            return _records_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise UpstreamUnavailable(SERVICE, f"unreadable {self.name} records: {exc}") from exc
