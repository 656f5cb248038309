"""A faithful local double of Agent Zero's event endpoints (docs/upstreams.md §1).

`POST /events/publish` wraps the payload in a PMOVES envelope and publishes it with **core NATS**
on subject = topic (nothing is stored: subscribe first). The order of checks follows the real
service: token (when a deployment sets one), body validation (FastAPI 422), NATS readiness (503),
then the envelope and payload schemas (an invalid payload is an unhandled 500 there). Accepted
envelopes are kept in `envelopes`, refusals in `rejected`; fault knobs come from `FaultInjector`
(`fail_next` and `fail_rate` answer 503 "NATS controller not ready").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from aiohttp import web
from jsonschema import Draft202012Validator
from nats.aio.client import Client as NatsClient

from backfill_doubles.faults import Fault, FaultInjector

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLISHED_TOPIC = "content.published.v1"
_NOT_READY = {"detail": "NATS controller not ready"}
_OPTIONAL_STRINGS = ("source", "correlation_id", "parent_id")


def _load_validators(contracts_dir: Path | None) -> dict[str, Draft202012Validator]:
    if contracts_dir is None:
        return {}
    names = {"envelope": "envelope.schema.json", PUBLISHED_TOPIC: f"{PUBLISHED_TOPIC}.schema.json"}
    return {
        key: Draft202012Validator(json.loads((contracts_dir / name).read_text()))
        for key, name in names.items()
    }


def _error(kind: str, loc: list[str | int], msg: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def body_errors(body: Any) -> list[dict[str, Any]]:
    """FastAPI-style validation errors for a publish body; empty when it is acceptable."""
    if not isinstance(body, dict):
        return [_error("model_attributes_type", ["body"], "Input should be a valid dictionary", body)]
    errors = []
    if "topic" not in body:
        errors.append(_error("missing", ["body", "topic"], "Field required", body))
    elif not isinstance(body["topic"], str):
        errors.append(
            _error("string_type", ["body", "topic"], "Input should be a valid string", body["topic"])
        )
    if "payload" not in body:
        errors.append(_error("missing", ["body", "payload"], "Field required", body))
    elif not isinstance(body["payload"], dict):
        errors.append(
            _error("dict_type", ["body", "payload"], "Input should be a valid dictionary", body["payload"])
        )
    errors.extend(
        _error("string_type", ["body", key], "Input should be a valid string", body[key])
        for key in _OPTIONAL_STRINGS
        if body.get(key) is not None and not isinstance(body[key], str)
    )
    return errors


def build_envelope(body: dict[str, Any]) -> dict[str, Any]:
    """The envelope Agent Zero publishes for an accepted body (empty optionals are left out)."""
    envelope: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "topic": body["topic"],
        "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "version": "v1",
        "source": body.get("source") or "agent-zero",
        "payload": body["payload"],
    }
    for key in ("correlation_id", "parent_id"):
        if body.get(key):
            envelope[key] = body[key]
    return envelope


class AgentZeroDouble(FaultInjector):
    """Agent Zero's `/events/publish` and `/healthz`, publishing to a real NATS server."""

    def __init__(
        self,
        nats_url: str | None,
        contracts_dir: Path | None,
        token: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.nats_url = nats_url
        self.token = token
        self.envelopes: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self._validators = _load_validators(contracts_dir)
        self._nc: NatsClient | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Event | None = None

    @property
    def nats_connected(self) -> bool:
        """Whether the NATS link is up right now (False while reconnecting)."""
        return self._nc is not None and self._nc.is_connected

    @property
    def controller_started(self) -> bool:
        """Whether the first NATS connect has completed (the real controller's `is_started`)."""
        task = self._connecting
        return task is not None and task.done() and not task.cancelled() and task.exception() is None

    def app(self) -> web.Application:
        """A fresh aiohttp application; it connects to NATS on startup and closes on cleanup."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/events/publish", self._publish, name="publish")
        app.router.add_get("/healthz", self._healthz, name="healthz")
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def start(self, connect_timeout: float = 2.0) -> None:
        """Connect to NATS, retrying forever in the background if the server is not up yet.

        Returns once connected, or after the first failed attempt, or after `connect_timeout`.
        """
        if self.nats_url is None:
            return
        self._first_attempt = first_attempt = asyncio.Event()
        self._nc = NatsClient()
        options: dict[str, Any] = {
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.2,
            "connect_timeout": 1,
        }
        self._connecting = asyncio.create_task(
            self._nc.connect(servers=[self.nats_url], error_cb=self._on_nats_error, **options)
        )
        attempted = asyncio.create_task(first_attempt.wait())
        await asyncio.wait(
            {self._connecting, attempted}, timeout=connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        attempted.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attempted

    async def close(self) -> None:
        """Stop connecting and close the NATS link."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, OSError):
                await self._connecting
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.close()
        self._nc, self._connecting = None, None

    async def _on_startup(self, _app: web.Application) -> None:
        await self.start()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.close()

    async def _on_nats_error(self, exc: Exception) -> None:
        """nats-py reports every failed (re)connect here; the double only tracks `nats_connected`."""
        if self._first_attempt is not None:
            self._first_attempt.set()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name != "publish":
            return await handler(request)
        if self.token is not None and request.headers.get("x-agent-token") != self.token:
            return self._reject(401, {"detail": "unauthorized"}, "unauthorized")
        fault = self.draw()
        await self.delay(fault)
        if fault in (Fault.FAIL, Fault.TIMEOUT):
            return self._reject(503, _NOT_READY, "injected fault")
        return await handler(request)

    def _reject(self, status: int, detail: dict[str, Any], reason: str, body: Any = None) -> web.Response:
        self.rejected.append({"status": status, "reason": reason, "body": body})
        return web.json_response(detail, status=status)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[dict[str, Any]]]:
        text = await request.text()
        try:
            body = json.loads(text)
        except ValueError as exc:
            return text, [
                _error("json_invalid", ["body", 0], "JSON decode error", {}) | {"ctx": {"error": str(exc)}}
            ]
        return body, body_errors(body)

    def _schema_problems(self, envelope: dict[str, Any]) -> list[str]:
        problems = []
        checks = [("envelope", envelope), (envelope["topic"], envelope["payload"])]
        for name, document in checks:
            validator = self._validators.get(name)
            if validator is not None:
                problems += [error.message for error in validator.iter_errors(document)]
        return problems

    async def _publish(self, request: web.Request) -> web.Response:
        body, errors = await self._read_body(request)
        if errors:
            return self._reject(422, {"detail": errors}, "invalid body", body)
        if not self.nats_connected or self._nc is None:
            return self._reject(503, _NOT_READY, "nats not connected", body)
        envelope = build_envelope(body)
        problems = self._schema_problems(envelope)
        if problems:
            self.rejected.append({"status": 500, "reason": "; ".join(problems), "body": body})
            return web.Response(status=500, text="Internal Server Error")
        try:
            await self._nc.publish(envelope["topic"], json.dumps(envelope).encode())
            await self._nc.flush(timeout=2)
        except (TimeoutError, nats.errors.Error, OSError):
            return self._reject(503, _NOT_READY, "publish failed", body)
        self.envelopes.append(envelope)
        return web.json_response({"published": envelope["topic"], "id": envelope["id"]})

    async def _healthz(self, _request: web.Request) -> web.Response:
        nats_state = {
            "url": self.nats_url,
            "connected": self.nats_connected,
            "controller_started": self.controller_started,
        }
        return web.json_response({"status": "ok", "nats": nats_state})
