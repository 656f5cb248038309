"""Agent Zero adapter: `POST /events/publish`, which wraps the payload in an envelope on core NATS."""

from __future__ import annotations

from typing import Any

import msgspec

from backfill.adapters.transport import HttpClient, Observer, Upstream, no_observer
from backfill.core.errors import UpstreamUnavailable

SERVICE = "agent_zero"
TOPIC = "content.published.v1"


class PublishAnswer(msgspec.Struct, frozen=True):
    published: str
    id: str


_answer_decoder = msgspec.json.Decoder(PublishAnswer)


class AgentZeroClient:
    def __init__(
        self, http: HttpClient, base_url: str, token: str | None, observe: Observer = no_observer
    ) -> None:
        self._up = Upstream(http, SERVICE, observe)
        self._url = f"{base_url.rstrip('/')}/events/publish"
        self._headers = {"x-agent-token": token} if token else {}

    async def publish(self, payload: dict[str, Any], correlation_id: str, source: str = "backfill") -> str:
        """Publish one event and return the envelope id Agent Zero assigned."""
        body = {"topic": TOPIC, "payload": payload, "source": source, "correlation_id": correlation_id}
        response = await self._up.request("POST", self._url, json=body, headers=self._headers)
        self._up.check(response)
        try:
            return _answer_decoder.decode(response.content).id
        except msgspec.DecodeError as exc:
            # The event may have gone out; the caller retries and the row's idempotency markers decide.
            raise UpstreamUnavailable(SERVICE, f"unreadable publish answer: {exc}") from exc
