"""PostgREST (Supabase REST) adapter for the catalog port (docs/upstreams.md §3)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from backfill.adapters.catalog import keyset_pages, merge_batched, merged_or_gone
from backfill.adapters.transport import HttpClient, HttpResponse, Observer, Upstream, no_observer, retry_pause
from backfill.core.catalog import ROW_COLUMNS, MergeItem, MergeResults, merged_meta
from backfill.core.errors import CatalogConflict, UpstreamUnavailable
from backfill.core.model import Row
from backfill.core.payload import MetaPatch
from backfill.core.related import GAP_KEY

SERVICE = "catalog"
OPTIMISTIC_ATTEMPTS = 5
_rows_decoder = msgspec.json.Decoder(list[Row])
_encoder = msgspec.json.Encoder()
_CANDIDATE_FILTER = {"status": "eq.published", "meta->>jellyfin_public_url": "is.null"}
_ENRICHED_FILTER = {"status": "eq.published", "meta->>jellyfin_public_url": "not.is.null"}
_GAP_FILTER = {f"meta->>{GAP_KEY}": "not.is.null"}
_MISSING_TABLE_CODES = {"PGRST205", "42P01"}  # 42P01 from older PostgREST


def republished_filter(run_id: str | None) -> dict[str, str]:
    """Rows with an event id, of one run when given."""
    found = {"meta->>backfill_event_id": "not.is.null"}
    return found if run_id is None else {**found, "meta->>backfill_run_id": f"eq.{run_id}"}


def auth_headers(key: str) -> dict[str, str]:
    """`apikey` always; `Authorization: Bearer` only for JWT-style keys (not for `sb_secret_...`)."""
    headers = {"apikey": key, "Accept": "application/json"}
    if key.count(".") == 2:
        headers["Authorization"] = f"Bearer {key}"
    return headers


class PostgrestCatalog:
    def __init__(
        self,
        http: HttpClient,
        rest_url: str,
        service_key: str,
        table: str = "studio_board",
        merge_function: str = "backfill_merge_meta",
        page_size: int = 1000,
        observe: Observer = no_observer,
    ) -> None:
        self._up = Upstream(http, SERVICE, observe)
        self._table_url = f"{rest_url.rstrip('/')}/{table}"
        self._rpc_url = f"{rest_url.rstrip('/')}/rpc/{merge_function}"
        self._batch_rpc_url = f"{self._rpc_url}_many"
        self._headers = auth_headers(service_key)
        self._page_size = min(page_size, 1000)  # Supabase silently caps a response at 1000 rows
        self.rpc_available: bool | None = None  # learnt on the first merge
        self.batch_rpc_available: bool | None = None  # learnt on the first merge of several rows

    async def _get_rows(
        self, params: dict[str, Any], prefer: str | None = None
    ) -> tuple[list[Row], HttpResponse]:
        headers = {**self._headers, "Prefer": prefer} if prefer else self._headers
        response = await self._up.read("GET", self._table_url, params=params, headers=headers)
        self._up.check(response)
        try:
            return _rows_decoder.decode(response.content), response
        except msgspec.DecodeError as exc:
            raise UpstreamUnavailable(SERVICE, f"unreadable rows: {exc}") from exc

    async def count_candidates(self, since_id: int = 0) -> int | None:
        return await self._count({**_CANDIDATE_FILTER, "id": f"gt.{since_id}"})

    async def count_enriched(self) -> int | None:
        return await self._count(_ENRICHED_FILTER)

    async def count_youtube_gaps(self) -> int | None:
        return await self._count(_GAP_FILTER)

    async def _count(self, filters: dict[str, str]) -> int | None:
        """The exact number of rows matching `filters`, from `Content-Range: 0-0/<total>`."""
        params = {**filters, "select": "id", "limit": 1}
        _, response = await self._get_rows(params, prefer="count=exact")
        total = response.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None

    def stream_candidates(self, since_id: int = 0, limit: int | None = None) -> AsyncIterator[list[Row]]:
        return keyset_pages(self._candidate_page, since_id, limit, self._page_size)

    async def _candidate_page(self, after: int, size: int) -> list[Row]:
        return await self._page(_CANDIDATE_FILTER, after, size)

    def republished_rows(self, run_id: str | None = None) -> AsyncIterator[list[Row]]:
        filters = republished_filter(run_id)

        async def page(after: int, size: int) -> list[Row]:
            return await self._page(filters, after, size)

        return keyset_pages(page, 0, None, self._page_size)

    async def _page(self, filters: dict[str, str], after: int, size: int) -> list[Row]:
        """Rows matching `filters` with id above `after`, in id order, at most `size`."""
        params = {
            **filters,
            "id": f"gt.{after}",
            "order": "id.asc",
            "limit": size,
            "select": ",".join(ROW_COLUMNS),
        }
        page, _ = await self._get_rows(params)
        return page

    async def fetch_rows(self, ids: Sequence[int]) -> list[Row]:
        rows: list[Row] = []
        for start in range(0, len(ids), self._page_size):
            chunk = ids[start : start + self._page_size]
            params = {"id": f"in.({','.join(str(i) for i in chunk)})", "select": ",".join(ROW_COLUMNS)}
            page, _ = await self._get_rows(params)
            rows.extend(page)
        return rows

    async def get_row(self, row_id: int) -> Row | None:
        page, _ = await self._get_rows({"id": f"eq.{row_id}", "select": ",".join(ROW_COLUMNS)})
        return page[0] if page else None

    async def merge_meta(self, row_id: int, patch: MetaPatch) -> Row | None:
        if self.rpc_available is not False:
            installed, row = await self._merge_rpc(row_id, patch)
            self.rpc_available = installed
            if installed:
                return await merged_or_gone(self.get_row, row_id, row)
        return await self._merge_optimistic(row_id, patch)

    async def merge_many(self, items: Sequence[MergeItem]) -> MergeResults:
        return await merge_batched(items, self._merge_batch_rpc, self.merge_meta, self.fetch_rows)

    async def _merge_batch_rpc(self, p_items: list[dict[str, Any]]) -> list[Row] | None:
        """The batch function's rows; None on an install without it (learnt once: one 404 PGRST202)."""
        if self.batch_rpc_available is False:
            return None
        rows = await self._call_rpc(self._batch_rpc_url, {"p_items": p_items})
        self.batch_rpc_available = rows is not None
        return rows

    async def _merge_rpc(self, row_id: int, patch: MetaPatch) -> tuple[bool, Row | None]:
        """(False, None) when the function is not installed (404 PGRST202)."""
        body = {"p_id": row_id, "p_patch": patch.patch, "p_defaults": patch.defaults}
        rows = await self._call_rpc(self._rpc_url, body)
        if rows is None:
            return False, None
        return True, (rows[0] if rows else None)

    async def _call_rpc(self, url: str, body: dict[str, Any]) -> list[Row] | None:
        """The rows a merge function returned; None when it is not installed (404 PGRST202). The merge
        functions give the same row however often they run, so a call that got no answer, or a 502,
        503 (PGRST002: the schema cache is being loaded, the call was not run) or 504, is made again
        within the delivery (`Upstream.write`)."""
        response = await self._up.write(
            "POST",
            url,
            content=_encoder.encode(body),
            headers={**self._headers, "Content-Type": "application/json"},
        )
        if response.status_code == 404 and _error_code(response) == "PGRST202":
            return None
        self._up.check(response)
        try:
            return _rows_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise UpstreamUnavailable(SERVICE, f"unreadable rows: {exc}") from exc

    async def _merge_optimistic(self, row_id: int, patch: MetaPatch) -> Row | None:
        """PATCH replaces jsonb whole, so pin the old value in the filter and retry when we lose a race.

        A PATCH that failed (or whose outcome is unknown) is never repeated as it was: the row is read
        again first. If the write landed, the pin no longer matches what was sent, and merging the patch
        into the value read gives the same meta again."""
        for attempt in range(1, OPTIMISTIC_ATTEMPTS + 1):
            current = await self.get_row(row_id)
            if current is None:
                return None
            try:
                rows = await self._patch_pinned(current, patch)
            except UpstreamUnavailable:
                if attempt == OPTIMISTIC_ATTEMPTS:
                    raise
                await asyncio.sleep(retry_pause(attempt))
                continue
            if rows:
                return rows[0]
        raise CatalogConflict(f"row {row_id} changed under {OPTIMISTIC_ATTEMPTS} optimistic writes in a row")

    async def _patch_pinned(self, current: Row, patch: MetaPatch) -> list[Row]:
        """The merged meta written only where the row's meta is still `current.meta`: the row as
        written, or nothing when another writer got there first."""
        pin = "is.null" if current.meta is None else f"eq.{_encoder.encode(current.meta).decode()}"
        response = await self._up.request(
            "PATCH",
            self._table_url,
            params={"id": f"eq.{current.id}", "meta": pin, "select": ",".join(ROW_COLUMNS)},
            content=_encoder.encode({"meta": merged_meta(current.meta, patch)}),
            headers={**self._headers, "Content-Type": "application/json", "Prefer": "return=representation"},
        )
        self._up.check(response)
        try:
            return _rows_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise UpstreamUnavailable(SERVICE, f"unreadable rows: {exc}") from exc

    async def aclose(self) -> None:
        """The HTTP client is shared and owned by the caller."""


def _error_code(response: HttpResponse) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def table_missing(response: HttpResponse) -> bool:
    """True when PostgREST answers that the table does not exist (an optional table PMOVES may lack)."""
    return response.status_code == 404 and _error_code(response) in _MISSING_TABLE_CODES
