"""Agent Zero adapter: `POST /events/publish`, which wraps the payload in an envelope on core NATS, and
`GET /healthz`, which says whether its NATS link is up (docs/upstreams.md §1).

How its answers are read, from its code (PMOVES.AI 09f0ad73): a 503 "NATS controller not ready" is
checked before anything is published, so it is safe to repeat; every 500 is an unhandled exception
raised before or by the publish (nothing went out), and the answer says nothing more than "Internal
Server Error". With its NATS link up, the only such failures are its own schema checks (or NATS's max
payload): the event is rejected, retrying changes nothing. With the link down, the publish itself
failed: retried. A 200 means the envelope was handed to nats-py's buffer, not that it reached NATS: the
caller confirms it by the envelope itself (`backfill.republish`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from backfill.adapters.transport import (
    HttpClient,
    HttpResponse,
    Observer,
    Upstream,
    error_detail,
    no_observer,
)
from backfill.core.errors import (
    OutcomeUnknown,
    UpstreamNotReady,
    UpstreamRejected,
    UpstreamUnavailable,
)

SERVICE = "agent_zero"
TOPIC = "content.published.v1"
NOT_READY = 503


class PublishAnswer(msgspec.Struct, frozen=True):
    published: str
    id: str


class NatsHealth(msgspec.Struct, frozen=True):
    connected: bool | None = None
    controller_started: bool | None = None


class Health(msgspec.Struct, frozen=True):
    nats: NatsHealth | None = None


_answer_decoder = msgspec.json.Decoder(PublishAnswer)
_health_decoder = msgspec.json.Decoder(Health)


class AgentZeroClient:
    def __init__(
        self, http: HttpClient, base_url: str, token: str | None = None, observe: Observer = no_observer
    ) -> None:
        """`token`: sent as `x-agent-token` when set. Agent Zero at PMOVES.AI 09f0ad73 reads no token
        (it protects nothing); sending it costs nothing and suits a deployment that checks one."""
        self._up = Upstream(http, SERVICE, observe)
        base = base_url.rstrip("/")
        self._url = f"{base}/events/publish"
        self._health_url = f"{base}/healthz"
        self._headers = {"x-agent-token": token} if token else {}

    async def publish(self, payload: dict[str, Any], correlation_id: str, source: str = "backfill") -> str:
        """Ask Agent Zero to publish one event; the envelope id it answered.

        Raises `UpstreamNotReady` when it did nothing (503 "not ready", or no connection), after trying
        again within one request timeout; `UpstreamRejected` when it rejects the event (a 500 with its
        NATS link up, a 4xx); `OutcomeUnknown` when the envelope may have gone out unanswered (a
        timeout, the connection lost, a gateway's 502/504, an unreadable 200); `UpstreamUnavailable`
        for a 500 while its NATS link is down (a failed publish) or a 429."""
        body = {"topic": TOPIC, "payload": payload, "source": source, "correlation_id": correlation_id}
        response = await self._up.retrying(
            "POST", self._url, NOT_READY.__eq__, UpstreamNotReady, json=body, headers=self._headers
        )
        status = response.status_code
        if response.is_success:
            try:
                return _answer_decoder.decode(response.content).id
            except msgspec.DecodeError as exc:
                raise OutcomeUnknown(SERVICE, f"unreadable publish answer: {exc}") from exc
        detail = f"POST /events/publish -> {status}: {error_detail(response)}"
        if status == NOT_READY:
            raise UpstreamNotReady(SERVICE, detail, status=status)
        if status == 500:
            raise await self._refused(response, detail)
        if status >= 500:
            raise OutcomeUnknown(SERVICE, detail, status=status)
        self._up.check(response)
        raise UpstreamRejected(SERVICE, detail, status=status)  # a 1xx: nothing Agent Zero sends

    async def _refused(self, response: HttpResponse, detail: str) -> UpstreamRejected | UpstreamUnavailable:
        """A 500: Agent Zero's own rejection when its NATS link is up, else a failed publish."""
        ready = await self.nats_ready()
        if ready:
            return UpstreamRejected(
                SERVICE,
                f"{detail}; its NATS link is up, so it rejected the event itself (its envelope or"
                f" {TOPIC} schema check, or NATS's max payload): the payload passes this backfill's copy of"
                " the contract, so compare Agent Zero's contracts (PMOVES_CONTRACTS_DIR) with it",
                status=response.status_code,
            )
        state = "down" if ready is False else "not reported"
        return UpstreamUnavailable(
            SERVICE, f"{detail}; its NATS link is {state}: a failed publish", status=500
        )

    async def nats_ready(self) -> bool | None:
        """Whether Agent Zero can publish now, by its `/healthz`: True when its NATS link is connected
        and its controller started; False when the link is down, or Agent Zero does not answer (or
        answers a 5xx); None when its answer does not say (no `/healthz`, or no `nats` in it)."""
        try:
            response = await self._up.read("GET", self._health_url)
        except UpstreamUnavailable:
            return False
        if response.status_code >= 500:
            return False
        if not response.is_success:
            return None
        try:
            nats = _health_decoder.decode(response.content).nats
        except msgspec.DecodeError:
            return None
        if nats is None or nats.connected is None:
            return None
        return nats.connected and nats.controller_started is not False
