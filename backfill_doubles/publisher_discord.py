"""A double of PMOVES' publisher-discord (docs/upstreams.md §1): core NATS subscriber posting one embed
per event, rendered as its `_format_event` renders a `content.published.v1` event (`build_embed`), in a
webhook body with `username` "PMOVES".

Like the real one (`_post_discord`, PMOVES.AI 09f0ad73) it does not pace itself: three POSTs in all;
before the next one it sleeps a 429's `Retry-After` header, or a backoff of 1 s doubling to 8 s after
a 5xx or no answer; any other refusal is not retried; after the third the embed is lost. Only 200 and
204 count as delivered. Two ways to run it, as PMOVES can be:
- stock (no recorder): it records nothing, as PMOVES' image, which lacks the `supabase` package, does;
- fixed (with a recorder): it upserts one row per handled event into the metrics table
  (`backfill_doubles.discord_metrics`), `webhook_success` true when Discord accepted the embed, false
  when it refused it or it was lost after the retries; an event not posted when the double closes is
  not recorded (never handled).
The demo runs it so the Discord side of a backfill is visible, and `producer verify` can read both the
channel and what it recorded.
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

ATTEMPTS = 3  # `_post_discord(..., retries=3)`: three POSTs in all
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 8.0


def wait_before_retry(response: httpx.Response | None, backoff: float) -> float:
    """As `_post_discord` waits before its next attempt: a 429's `Retry-After` header (seconds), else
    the backoff (no answer, a 5xx, or a 429 without a readable header)."""
    if response is not None and response.status_code == 429:
        try:
            return float(response.headers.get("Retry-After", backoff))
        except ValueError:
            return backoff
    return backoff


def hms(seconds: float) -> str:
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _tags(raw: Any) -> list[str]:
    """Tags as publisher-discord reads them: a comma-separated string or a list of scalars."""
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, list):
        return [str(t).strip() for t in raw if isinstance(t, str | int | float) and str(t).strip()]
    return []


def _duration(payload: dict[str, Any], meta: dict[str, Any]) -> float | None:
    value = payload.get("duration")
    if value is None:
        value = meta.get("duration")
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _jellyfin_fields(
    payload: dict[str, Any], meta: dict[str, Any], jellyfin_url: str
) -> list[dict[str, Any]]:
    """ "Jellyfin Item" (the id in backticks) and "Jellyfin": the deep link the event carries, else one
    built in the old form from `jellyfin_base_url` (or the service's JELLYFIN_URL)."""
    item = payload.get("jellyfin_item_id") or meta.get("jellyfin_item_id")
    if not item:
        return []
    fields = [{"name": "Jellyfin Item", "value": f"`{item}`", "inline": True}]
    link = payload.get("jellyfin_public_url") or meta.get("jellyfin_public_url")
    base = payload.get("jellyfin_base_url") or meta.get("jellyfin_base_url") or jellyfin_url
    if not link and isinstance(base, str) and base:
        link = f"{base.rstrip('/')}/web/index.html#!/details?id={item}"
    if link:
        fields.append({"name": "Jellyfin", "value": link, "inline": False})
    return fields


def _link_fields(payload: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Public URL, Namespace, Published Path, Artifact URI; and the description's lines."""
    public_url = payload.get("public_url") or payload.get("jellyfin_public_url")
    path, namespace = payload.get("published_path"), payload.get("namespace") or payload.get("workspace")
    fields, lines = [], []
    if isinstance(public_url, str) and public_url:
        lines.append(f"[Open published content]({public_url})")
        fields.append({"name": "Public URL", "value": public_url, "inline": False})
    else:
        fields.append({"name": "Public URL", "value": "_not available_", "inline": False})
        lines += [f"Path: `{path}`"] if path else []
    if namespace:
        fields.append({"name": "Namespace", "value": str(namespace), "inline": True})
        lines += [f"Namespace: `{namespace}`"] if not public_url else []
    if path:
        fields.append({"name": "Published Path", "value": f"`{path}`", "inline": False})
    if payload.get("artifact_uri"):
        fields.append({"name": "Artifact URI", "value": str(payload["artifact_uri"]), "inline": False})
    return fields, lines


def build_embed(
    payload: dict[str, Any], *, prefix: str = "Published: ", jellyfin_url: str = ""
) -> dict[str, Any]:
    """The embed publisher-discord renders for one `content.published.v1` payload (its `_format_event`):
    link from public_url else jellyfin_public_url; fields Public URL, Namespace, Published Path, Artifact
    URI, Duration, Jellyfin Item, Jellyfin, Tags (first 12), Summary; the thumbnail."""
    meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
    title = payload.get("title") or payload.get("slug") or payload.get("published_path")
    fields, lines = _link_fields(payload)
    embed: dict[str, Any] = {"title": f"{prefix}{title or 'content'}", "color": 0x22C55E, "fields": fields}
    public_url = payload.get("public_url") or payload.get("jellyfin_public_url")
    if isinstance(public_url, str) and public_url:
        embed["url"] = public_url
    if (duration := _duration(payload, meta)) is not None:
        fields.append({"name": "Duration", "value": hms(duration), "inline": True})
    fields += _jellyfin_fields(payload, meta, jellyfin_url)
    if tags := _tags(payload.get("tags") or meta.get("tags")):
        fields.append({"name": "Tags", "value": ", ".join(f"`{t}`" for t in tags[:12]), "inline": False})
    if lines:
        embed["description"] = "\n".join(lines)
    summary = payload.get("summary") or payload.get("description") or meta.get("summary")
    if summary and "description" not in embed:
        embed["description"] = str(summary)[:1800]
        if overflow := str(summary)[1800:]:
            fields.append({"name": "Summary (cont.)", "value": overflow[:1024], "inline": False})
    elif summary:
        fields.append({"name": "Summary", "value": str(summary)[:1024], "inline": False})
    thumbnail = payload.get("thumbnail_url") or meta.get("thumbnail_url")
    if isinstance(thumbnail, str) and thumbnail:
        embed["thumbnail"] = {"url": thumbnail}
    return embed


class PublisherDiscord:
    def __init__(
        self,
        webhook_url: str,
        subjects: tuple[str, ...] = ("content.published.v1",),
        recorder: Recorder | None = None,
        first_backoff: float = FIRST_BACKOFF,
    ) -> None:
        self._recorder = recorder
        self._first_backoff = first_backoff
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
        body = {"username": "PMOVES", "embeds": [build_embed(envelope.get("payload") or {})]}
        backoff = self._first_backoff
        for _attempt in range(ATTEMPTS):
            if self._closing:
                return  # not posted: the demo ended first (never handled, so not recorded)
            self._posting += 1
            self._idle.clear()
            try:  # the answer and its record are one unit: `close` waits for both
                try:
                    response = await self._http.post(self._webhook, json=body)
                except httpx.HTTPError:
                    response = None  # no answer: wait the backoff and try again
                if response is not None and response.status_code in (200, 204):
                    self.posted += 1
                    await self._record(envelope, True)
                    return
                if response is not None and response.status_code != 429 and response.status_code < 500:
                    await self._record(envelope, False)  # refused (400, 401, 404...): never retried
                    return
            finally:
                self._posting -= 1
                if not self._posting:
                    self._idle.set()
            await asyncio.sleep(wait_before_retry(response, backoff))
            backoff = min(backoff * 2.0, MAX_BACKOFF)
        self.dropped += 1  # every attempt rate-limited, failed or unanswered: the embed is lost
        await self._record(envelope, False)

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
