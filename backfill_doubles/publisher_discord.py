"""A double of PMOVES' publisher-discord (docs/upstreams.md §1): core NATS subscriber posting one embed
per event.

Like the real one it does not pace itself: on 429 it sleeps `retry_after`, retries 3 times, then the
embed is lost. With a recorder it upserts one row per handled event into the metrics table
(`backfill_doubles.discord_metrics`), `webhook_success` true when Discord accepted the embed, false when
it refused it or it was lost after the retries; an event not posted when the double closes is not
recorded (never handled). The demo runs it so the Discord side of a backfill is visible, and
`producer verify` can read what it recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import nats
from nats.aio.msg import Msg

from backfill_doubles.discord_metrics import Recorder, metrics_record

RETRIES = 3


def hms(seconds: float) -> str:
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def build_embed(payload: dict[str, Any]) -> dict[str, Any]:
    """Link from public_url else jellyfin_public_url; Duration, Jellyfin and Tags fields; the thumbnail."""
    fields = []
    if isinstance(payload.get("duration"), int | float):
        fields.append({"name": "Duration", "value": hms(payload["duration"]), "inline": True})
    if payload.get("jellyfin_item_id"):
        fields.append({"name": "Jellyfin", "value": str(payload["jellyfin_item_id"]), "inline": True})
    if payload.get("tags"):
        fields.append({"name": "Tags", "value": ", ".join(payload["tags"][:12])[:1024]})
    embed: dict[str, Any] = {
        "title": str(payload.get("title") or payload.get("published_path", ""))[:256],
        "fields": fields,
    }
    link = payload.get("public_url") or payload.get("jellyfin_public_url")
    if link:
        embed["url"] = link
    thumbnail = payload.get("thumbnail_url") or (payload.get("meta") or {}).get("thumbnail_url")
    if thumbnail:
        embed["thumbnail"] = {"url": thumbnail}
    return embed


class PublisherDiscord:
    def __init__(
        self,
        webhook_url: str,
        subjects: tuple[str, ...] = ("content.published.v1",),
        recorder: Recorder | None = None,
    ) -> None:
        self._recorder = recorder
        self.record_errors: list[str] = []  # recording failures, kept for the caller to report
        self._webhook = webhook_url
        self._subjects = subjects
        self._http = httpx.AsyncClient(timeout=10)
        self._nc: nats.NATS | None = None
        self.received = 0
        self.posted = 0
        self.dropped = 0
        self._posting = 0  # POSTs sent and not answered yet
        self._idle = asyncio.Event()  # set while no POST is on the wire
        self._idle.set()
        self._closing = False

    async def start(self, nats_url: str) -> None:
        self._nc = await nats.connect(nats_url)
        for subject in self._subjects:
            await self._nc.subscribe(subject, cb=self._on_event)
        await self._nc.flush()

    async def _on_event(self, msg: Msg) -> None:
        self.received += 1
        envelope = json.loads(msg.data)
        body = {"embeds": [build_embed(envelope.get("payload") or {})]}
        for attempt in range(RETRIES + 1):
            if self._closing:
                return  # not posted: the demo ended first (never handled, so not recorded)
            self._posting += 1
            self._idle.clear()
            try:  # the answer and its record are one unit: `close` waits for both
                response = await self._http.post(self._webhook, json=body)
                if response.status_code != 429:
                    self.posted += int(response.is_success)
                    await self._record(envelope, response.is_success)
                    return
                if attempt == RETRIES:
                    self.dropped += 1
                    await self._record(envelope, False)
                    return
            finally:
                self._posting -= 1
                if not self._posting:
                    self._idle.set()
            await asyncio.sleep(float(response.json().get("retry_after", 1.0)))

    async def _record(self, envelope: dict[str, Any], success: bool) -> None:
        if self._recorder is None:
            return
        try:
            await self._recorder.record(metrics_record(envelope, success))
        except Exception as exc:  # noqa: BLE001 - a double's callback: kept and reported by the caller
            self.record_errors.append(f"{type(exc).__name__}: {exc}")

    async def close(self, settle_within: float = 5.0) -> None:
        """Take no more events, start no more POSTs, and let the ones on the wire be answered, so that
        `posted` and what the webhook received agree when the counts are read."""
        self._closing = True
        # before closing NATS: closing it cancels the handler, even one whose POST the webhook has
        # already received
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), settle_within)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        await self._http.aclose()
        if self._recorder is not None:
            await self._recorder.aclose()
