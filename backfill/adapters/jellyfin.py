"""Jellyfin adapter: item by id and title search, with the MediaBrowser auth header (docs/upstreams.md §2).

Every read names `JELLYFIN_USER_ID` (`userId`), so items carry that user's `UserData` (whether it has
played them: the live publisher's `jellyfin_played`); listings ask for it explicitly (`enableUserData`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from backfill.adapters.batching import Batcher, each_on_failure
from backfill.adapters.transport import HttpClient, HttpResponse, Observer, Upstream, no_observer
from backfill.core.errors import UpstreamUnavailable
from backfill.core.matching import DateHint
from backfill.core.model import JellyfinItem, SearchResult, normalize_item_id

SERVICE = "jellyfin"
MAX_IDS_PER_REQUEST = 40  # 33 bytes each in the query: well under Kestrel's 8 KB request line
_SEARCH_FIELDS = "Path,Tags,Genres,ProviderIds,PremiereDate,ProductionYear"
_CHANGE_FIELDS = "DateCreated,PremiereDate,ProductionYear"
CHANGES_PAGE = 200  # items per request when asking what changed
CHANGES_PAGES = 25  # requests per question at most: beyond 5,000 changed items the answer is "cannot say"
_item_decoder = msgspec.json.Decoder(JellyfinItem)
_search_decoder = msgspec.json.Decoder(SearchResult)


def auth_header(api_key: str) -> str:
    """`X-Emby-Token` and `api_key` are off by default in 12.0: this header works on 10.9 through 12.0."""
    client = 'Client="pmoves-backfill", Device="backfill", DeviceId="pmoves-backfill", Version="1"'
    return f'MediaBrowser {client}, Token="{api_key}"'


class JellyfinClient:
    """Reads items for one configured user; an API key has no user of its own, so `userId` is always sent."""

    def __init__(
        self,
        http: HttpClient,
        base_url: str,
        api_key: str,
        user_id: str,
        observe: Observer = no_observer,
        batch: int = 1,
    ) -> None:
        """`batch` > 1: lookups by id made in the same event-loop turn share one `ids=` request."""
        self._up = Upstream(http, SERVICE, observe)
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": auth_header(api_key), "Accept": "application/json"}
        self._user_id = user_id
        self._batcher: Batcher[str, JellyfinItem] | None = (
            Batcher(each_on_failure(self.get_items, self._get_item), min(batch, MAX_IDS_PER_REQUEST))
            if batch > 1
            else None
        )

    async def get_item(self, item_id: str) -> JellyfinItem | None:
        """The item, or None when Jellyfin does not have it (404, or 400 for an id it refuses)."""
        canonical = normalize_item_id(item_id)
        if canonical is None:
            return None
        if self._batcher is not None:
            return await self._batcher.load(canonical)
        return await self._get_item(canonical)

    async def _get_item(self, canonical: str) -> JellyfinItem | None:
        response = await self._up.read(
            "GET",
            f"{self._base}/Items/{canonical}",
            params={"userId": self._user_id},
            headers=self._headers,
        )
        if response.status_code == 404:
            return None
        if response.status_code == 400 and "problem+json" in response.headers.get("content-type", ""):
            return None  # Jellyfin refused the id itself; plain-text 400 (missing userId) is our bug
        self._up.check(response)
        item: JellyfinItem = self._decode(response, _item_decoder)
        return item

    async def get_items(self, item_ids: Sequence[str]) -> dict[str, JellyfinItem]:
        """Items by canonical id in one `GET /Items?ids=`; ids Jellyfin does not have are absent.

        docs/upstreams.md §2: invalid ids are silently dropped and a list of only invalid ids lists
        everything, so only canonical ids are sent and only items that were asked for are returned.
        """
        wanted = {canonical for raw in item_ids if (canonical := normalize_item_id(raw)) is not None}
        if not wanted:
            return {}
        params = {
            "userId": self._user_id,
            "ids": ",".join(sorted(wanted)),
            "fields": _SEARCH_FIELDS,
            "enableUserData": "true",
        }
        response = await self._up.read("GET", f"{self._base}/Items", params=params, headers=self._headers)
        self._up.check(response)
        result: SearchResult = self._decode(response, _search_decoder)
        found = {normalize_item_id(item.id): item for item in result.items}
        return {item_id: item for item_id, item in found.items() if item_id in wanted}

    async def search(self, term: str, hint: DateHint | None, limit: int) -> list[JellyfinItem]:
        """Title search across all libraries (`recursive=true`, or only libraries come back)."""
        params: dict[str, str | int] = {
            "userId": self._user_id,
            "searchTerm": term,
            "recursive": "true",
            "fields": _SEARCH_FIELDS,
            "enableUserData": "true",
            "limit": limit,
        }
        window = hint.premiere_window() if hint is not None else None
        if window is not None:
            params["minPremiereDate"], params["maxPremiereDate"] = window
        elif hint is not None and hint.year is not None:
            params["years"] = hint.year
        response = await self._up.read("GET", f"{self._base}/Items", params=params, headers=self._headers)
        self._up.check(response)
        result = self._decode(response, _search_decoder)
        return [item for item in result.items if normalize_item_id(item.id) is not None]

    async def changed_since(self, since: datetime) -> list[JellyfinItem] | None:
        """Items saved or added at or after `since`; None when more changed than CHANGES_PAGES pages
        hold (docs/upstreams.md §2).

        Saved: `minDateLastSaved` with `minDateLastSavedForUser` set to the same time, because up to
        10.10 the first alone matches nothing (its SQL compares with the second). A scan saves each item
        it adds once its metadata is refreshed; the items added but not saved yet are the newest by
        `DateCreated`, listed newest first until one is older than `since`.
        """
        moment = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        saved = await self._listed({"minDateLastSaved": moment, "minDateLastSavedForUser": moment})
        added = await self._listed(
            {"sortBy": "DateCreated", "sortOrder": "Descending"},
            older=lambda item: item.added_at is not None and item.added_at < since,
        )
        if saved is None or added is None:
            return None
        found = {item.id: item for item in [*saved, *added] if normalize_item_id(item.id) is not None}
        return list(found.values())

    async def _listed(
        self, filters: dict[str, str], older: Callable[[JellyfinItem], bool] | None = None
    ) -> list[JellyfinItem] | None:
        """Every item of a listing page by page (until `older` holds for one, when given); None when
        CHANGES_PAGES pages do not reach the end."""
        found: list[JellyfinItem] = []
        for page in range(CHANGES_PAGES):
            params: dict[str, str | int] = {
                "userId": self._user_id,
                "recursive": "true",
                "fields": _CHANGE_FIELDS,
                "enableUserData": "false",
                "enableImages": "false",
                "startIndex": page * CHANGES_PAGE,
                "limit": CHANGES_PAGE,
                **filters,
            }
            response = await self._up.read("GET", f"{self._base}/Items", params=params, headers=self._headers)
            self._up.check(response)
            result: SearchResult = self._decode(response, _search_decoder)
            for item in result.items:
                if older is not None and older(item):
                    return found
                found.append(item)
            if len(result.items) < CHANGES_PAGE or (page + 1) * CHANGES_PAGE >= result.total_record_count:
                return found
        return None

    @staticmethod
    def _decode(response: HttpResponse, decoder: msgspec.json.Decoder[Any]) -> Any:
        try:
            return decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise UpstreamUnavailable(SERVICE, f"unreadable answer from {response.path}: {exc}") from exc
