"""PMOVES.yt adapter: `POST /yt/search` for videos related to a row (docs/upstreams.md §8).

PMOVES.yt takes no credentials, and none are sent to it. A search is a read: a transient failure is
tried again within one request timeout (`Upstream.read`), then raised for the message's own retries.
"""

from __future__ import annotations

from typing import Any

import msgspec

from backfill.adapters.transport import HttpClient, Observer, Upstream, no_observer
from backfill.core.errors import UpstreamUnavailable
from backfill.core.related import SearchAnswer
from backfill.core.wire import YoutubeLinking

SERVICE = "pmoves_yt"
_answer_decoder = msgspec.json.Decoder(SearchAnswer)


class YoutubeSearch:
    def __init__(self, http: HttpClient, base_url: str, observe: Observer = no_observer) -> None:
        self._up = Upstream(http, SERVICE, observe)
        self._url = f"{base_url.rstrip('/')}/yt/search"

    async def search(self, query: str, linking: YoutubeLinking) -> list[dict[str, Any]]:
        """The results for `query`, best first, as PMOVES' script asks for them (query, limit,
        threshold; no namespace). 4xx: `UpstreamRejected`; timeout, 5xx, unreadable: `UpstreamUnavailable`."""
        body = {"query": query, "limit": linking.limit, "threshold": linking.threshold}
        response = await self._up.read("POST", self._url, json=body, headers={"Accept": "application/json"})
        self._up.check(response)
        try:
            answer = _answer_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise UpstreamUnavailable(SERVICE, f"unreadable search answer: {exc}") from exc
        return answer.results
