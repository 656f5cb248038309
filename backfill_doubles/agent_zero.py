"""A faithful local double of Agent Zero's event endpoints, as its code behaves (docs/upstreams.md §1).

PMOVES' `services/agent-zero/main.py` and `services/agent_zero/controller.py` (PMOVES.AI 09f0ad73):

- `POST /events/publish` checks **no token** (`x-agent-token` is ignored, whatever
  `AGENT_ZERO_EVENTS_TOKEN` says); a body that is not `{"topic": str, "payload": object, ...}` is
  FastAPI's 422; while its NATS link is down it answers 503 `{"detail": "NATS controller not ready"}`;
  then it builds the envelope (its own uuid4 id; the body's `correlation_id` and `parent_id` copied,
  `source` defaulting to `agent-zero`) and validates envelope and payload against the PMOVES schemas: a
  failure is an unhandled exception, 500 `Internal Server Error` text/plain, after which uvicorn closes
  the connection; it publishes with core NATS `nc.publish` and **no flush**, and answers 200 at once.
- Its NATS client keeps nats-py's defaults: 60 reconnects 2 s apart, after which the client is closed
  for good and every publish is 503 until the process restarts (`reconnect_attempts` / `reconnect_wait`
  shorten that for tests). Until its first connect succeeds it retries with a backoff of 1 s doubling to
  30 s, answering 503 meanwhile.
- `GET /healthz` reports `nats.connected` and `nats.controller_started`.

Accepted envelopes are kept in `envelopes`, refusals in `rejected`. Fault knobs come from
`FaultInjector` (`fail_next` and `fail_rate` answer 503 "NATS controller not ready"), plus the two crash
windows: `drop_after_publish` (publish, flush, then drop the connection without answering: a crash
after publishing) and `skip_publish_after_answer` (answer 200, never publish: a crash between the
answer and its unflushed envelope). Run as a process (`python -m backfill_doubles.agent_zero`), the
same two windows end in a real SIGKILL of the process (`--die-after-publish N`, `--die-after-answer N`),
and SIGTERM is ignored, as the real service's startup hook makes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from aiohttp import web
from jsonschema import Draft202012Validator
from nats.aio.client import Client as NatsClient

from backfill_doubles.contracts import CONTRACTS_DIR
from backfill_doubles.faults import Fault, FaultInjector
from backfill_doubles.serve import serve

PUBLISHED_TOPIC = "content.published.v1"
_NOT_READY = {"detail": "NATS controller not ready"}
_OPTIONAL_STRINGS = ("source", "correlation_id", "parent_id")
CONNECT_BACKOFF_MAX = 30.0  # the real connect loop's cap, seconds


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
        seed: int = 0,
        *,
        reconnect_attempts: int = 60,
        reconnect_wait: float = 2.0,
        connect_backoff: float = 1.0,
    ) -> None:
        super().__init__(seed)
        self.nats_url = nats_url
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_wait = reconnect_wait
        self.connect_backoff = connect_backoff
        self.envelopes: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.answered: list[str] = []  # every envelope id answered with a 200, published or not
        self.drop_after_publish = 0  # the next N accepted publishes: published, never answered
        self.skip_publish_after_answer = 0  # the next N: answered 200, never published
        # Process mode: called with "publish" or "answer" at those two moments (it kills the process), on
        # the accepted publish whose number `crash_at` gives (1 = the first this process accepts).
        self.crash: Callable[[str], None] | None = None
        self.crash_at: dict[str, int] = {}
        self.accepted = 0  # publishes that passed every check (answered or not)
        self.health_checks = 0  # GET /healthz answered
        self._validators = _load_validators(contracts_dir)
        self._nc: NatsClient | None = None
        self._ready = False  # the real `_controller_ready`: the first connect went through
        self._connecting: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Event | None = None

    @property
    def nats_connected(self) -> bool:
        """Whether the NATS link is up right now (False while reconnecting, and after giving up)."""
        return self._nc is not None and self._nc.is_connected

    @property
    def controller_started(self) -> bool:
        """Whether the first NATS connect has completed (the real controller's `is_started`)."""
        return self._ready

    @property
    def gave_up(self) -> bool:
        """Whether the NATS client spent its reconnects and closed: 503 until the process restarts."""
        return self._ready and self._nc is not None and self._nc.is_closed

    def app(self) -> web.Application:
        """A fresh aiohttp application; it connects to NATS on startup and closes on cleanup."""
        app = web.Application()
        app.router.add_post("/events/publish", self._publish, name="publish")
        app.router.add_get("/healthz", self._healthz, name="healthz")
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def start(self, first_attempt_within: float = 2.0) -> None:
        """Start the controller's connect loop in the background (the app serves meanwhile).

        Returns once connected, or after the first failed attempt, or after `first_attempt_within`.
        """
        if self.nats_url is None:
            return
        self._first_attempt = first_attempt = asyncio.Event()
        self._connecting = asyncio.create_task(self._connect_loop(self.nats_url))
        attempted = asyncio.create_task(first_attempt.wait())
        await asyncio.wait(
            {self._connecting, attempted}, timeout=first_attempt_within, return_when=asyncio.FIRST_COMPLETED
        )
        attempted.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attempted

    async def _connect_loop(self, url: str) -> None:
        """The real `_controller_connect_loop`: connect with nats-py's reconnect budget; on failure wait
        1 s, doubling to 30 s, and try again. Once connected it never connects again."""
        backoff = self.connect_backoff
        while True:
            nc = NatsClient()
            options: dict[str, Any] = {  # nats-py's defaults, as Agent Zero leaves them (unless shortened)
                "max_reconnect_attempts": self.reconnect_attempts,
                "reconnect_time_wait": self.reconnect_wait,
                "connect_timeout": 2,
            }
            try:
                await nc.connect(servers=[url], error_cb=self._on_nats_error, **options)
            except (nats.errors.Error, OSError, TimeoutError):
                if self._first_attempt is not None:
                    self._first_attempt.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, CONNECT_BACKOFF_MAX)
                continue
            self._nc, self._ready = nc, True
            if self._first_attempt is not None:
                self._first_attempt.set()
            return

    async def close(self) -> None:
        """Stop connecting and close the NATS link."""
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, OSError):
                await self._connecting
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._nc.close()
        self._nc, self._connecting, self._ready = None, None, False

    async def _on_startup(self, _app: web.Application) -> None:
        await self.start()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.close()

    async def _on_nats_error(self, exc: Exception) -> None:
        """nats-py reports every failed (re)connect here (its first connect, too, goes on trying for the
        whole reconnect budget before it raises): the first one ends `start`'s wait."""
        if self._first_attempt is not None:
            self._first_attempt.set()

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

    async def _publish(self, request: web.Request) -> web.StreamResponse:
        body, errors = await self._read_body(request)
        if errors:
            return self._reject(422, {"detail": errors}, "invalid body", body)
        fault = self.draw()
        await self.delay(fault)
        if fault in (Fault.FAIL, Fault.TIMEOUT):
            return self._reject(503, _NOT_READY, "injected fault", body)
        if not (self._ready and self.nats_connected):
            return self._reject(503, _NOT_READY, "nats not connected", body)
        envelope = build_envelope(body)
        problems = self._schema_problems(envelope)
        if problems:
            return await self._unhandled(request, "; ".join(problems), body)
        return await self._send(request, envelope, body)

    async def _send(self, request: web.Request, envelope: dict[str, Any], body: Any) -> web.StreamResponse:
        """Publish (core NATS, no flush) and answer at once; or one of the two crash windows."""
        assert self._nc is not None
        self.accepted += 1
        self._arm_crash()
        if self.skip_publish_after_answer > 0:
            self.skip_publish_after_answer -= 1
            return await self._answer_then_lose(request, envelope)
        try:
            await self._nc.publish(envelope["topic"], json.dumps(envelope).encode())
        except nats.errors.Error:
            return await self._unhandled(request, "publish failed", body)
        self.envelopes.append(envelope)
        if self.drop_after_publish > 0:
            self.drop_after_publish -= 1
            return await self._publish_then_drop(request)
        self.answered.append(envelope["id"])
        return web.json_response({"published": envelope["topic"], "id": envelope["id"]})

    async def _unhandled(self, request: web.Request, reason: str, body: Any) -> web.StreamResponse:
        """An exception FastAPI does not handle: Starlette's 500 text/plain, then uvicorn closes the
        connection (no `Connection: close` header is sent: the client learns it from the close)."""
        self.rejected.append({"status": 500, "reason": reason, "body": body})
        response = web.Response(status=500, text="Internal Server Error", charset="utf-8")
        await response.prepare(request)
        await response.write_eof()
        if request.transport is not None:
            request.transport.close()
        return response

    def _arm_crash(self) -> None:
        if self.crash_at.get("publish") == self.accepted:
            self.drop_after_publish = 1
        if self.crash_at.get("answer") == self.accepted:
            self.skip_publish_after_answer = 1

    async def _publish_then_drop(self, request: web.Request) -> web.StreamResponse:
        """The envelope is out (flushed); the client gets no answer: the process dies, or the
        connection is dropped."""
        assert self._nc is not None
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._nc.flush(timeout=2)
        if self.crash is not None:
            self.crash("publish")
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError  # aiohttp drops a handler whose connection is gone

    async def _answer_then_lose(self, request: web.Request, envelope: dict[str, Any]) -> web.StreamResponse:
        """The 200 goes out; the envelope never does (it was still in the unflushed buffer when the
        process died)."""
        self.answered.append(envelope["id"])
        response = web.json_response({"published": envelope["topic"], "id": envelope["id"]})
        if self.crash is None:
            return response
        await response.prepare(request)
        await response.write_eof()
        self.crash("answer")
        return response

    async def _healthz(self, _request: web.Request) -> web.Response:
        self.health_checks += 1
        nats_state = {
            "url": self.nats_url,
            "connected": self.nats_connected,
            "controller_started": self.controller_started,
        }
        return web.json_response({"status": "ok", "nats": nats_state})


def _sigkill(moment: str) -> None:
    """The process's crash: nothing runs after it, the kernel closes every connection."""
    print(f"agent-zero double: SIGKILL after {moment}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


async def serve_process(args: argparse.Namespace) -> None:
    """Serve the double until killed; print `READY <url>` once the port is bound."""
    double = AgentZeroDouble(
        args.nats_url,
        None if args.no_contracts else Path(args.contracts),
        seed=args.seed,
        reconnect_attempts=args.reconnect_attempts,
        reconnect_wait=args.reconnect_wait,
        connect_backoff=args.connect_backoff,
    )
    double.fail_rate = args.fail_rate
    double.crash = _sigkill
    double.crash_at = {"publish": args.die_after_publish, "answer": args.die_after_answer}
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: print("agent-zero double: SIGTERM ignored", flush=True))
    async with serve(double.app(), port=args.port) as url:
        print(f"READY {url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backfill_doubles.agent_zero", description=__doc__)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--contracts", default=str(CONTRACTS_DIR))
    parser.add_argument("--no-contracts", action="store_true", help="validate nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0, help="503 not ready to this share")
    parser.add_argument("--reconnect-attempts", type=int, default=60)
    parser.add_argument("--reconnect-wait", type=float, default=2.0)
    parser.add_argument("--connect-backoff", type=float, default=1.0)
    parser.add_argument("--die-after-publish", type=int, default=0, help="SIGKILL after publishing request N")
    parser.add_argument("--die-after-answer", type=int, default=0, help="SIGKILL after answering request N")
    asyncio.run(serve_process(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
