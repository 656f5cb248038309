"""Light local upstreams for the benchmark: PostgREST, Jellyfin and Agent Zero with fixed latency.

The project's doubles (`backfill_doubles`) are strict and complete, which costs CPU per request (query
parsing over every row, contract checks, aiohttp's server). Here each service answers only what the
backfill asks, in the same shapes and status codes, from in-memory state indexed by row id, after
sleeping its configured latency, on a minimal HTTP/1.1 keep-alive server (`asyncio.Protocol`, one
request at a time per connection, bodies by Content-Length: what aiohttp and httpx clients send). On a
2-core machine every microsecond the upstreams spend is taken from the client being measured; in
production they run elsewhere.

Run as its own process: `python -m bench.upstreams --port 0` prints `READY <base-url>` and serves:

- `GET  /rest/studio_board` (`id=eq.N`, `id=in.(...)`, candidate pages `id=gt.N&order=id.asc&limit=K`,
  `Prefer: count=exact`), `POST /rest/rpc/backfill_merge_meta` and `POST /rest/rpc/backfill_merge_meta_many`
  (catalog latency each);
- `GET  /jellyfin/Items/{id}?userId=...` and `GET /jellyfin/Items?ids=...` (Jellyfin latency); the
  listings `producer watch` asks what changed with (`minDateLastSaved`: nothing saved since; `sortBy=
  DateCreated`: the newest item, added before any time the benchmark asks about);
- `POST /agent/events/publish` (Agent Zero latency): with `--nats-url`, the envelope goes out on core NATS
  as Agent Zero sends it (its own uuid4 id, the body's correlation id and source; `publish` without a
  flush), so workers that confirm a republish by its envelope see it;
- control: `POST /_bench/seed {"rows": N}`, `POST /_bench/append {"rows": N}` (N more candidates above
  the last id), `GET /_bench/stats` (counts only: it is polled during a
  run), `GET /_bench/merges` (every merge with its time, read once at the end), `GET /_bench/publishes`
  (the time each Agent Zero post arrived), `POST /_bench/reset_stats`.

Every merge and every post is timestamped with `time.monotonic()` (one clock for all processes on
Linux), so the benchmark can measure throughput and per-row latency from the upstream side of the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote

import msgspec
import nats
from nats.aio.client import Client as NatsClient

from backfill.eventloop import event_loop_runner

SERVER_ID = "f" * 32
USER_ID = "b" * 32
API_KEY = "bench-jellyfin-key"
SERVICE_KEY = "bench-service-key"
MAX_ROWS = 1000  # PostgREST's silent response cap, as in Supabase
_encode = msgspec.json.encode
_decode = msgspec.json.decode


def item_id(row_id: int) -> str:
    return f"{row_id:032x}"


class State:
    def __init__(self, latency: dict[str, float], nats: NatsClient | None = None) -> None:
        self.latency = latency
        self.nats = nats  # where Agent Zero's envelopes go; None: answered, never sent
        self.rows: list[dict[str, Any] | None] = [None]  # index = row id
        self.candidates = 0
        self.requests: Counter[str] = Counter()
        self.merges: list[tuple[int, float]] = []
        self.publishes: list[float] = []

    def seed(self, count: int) -> None:
        self.rows = [None]
        self.candidates = 0
        self.append(count)
        self.merges.clear()
        self.publishes.clear()
        self.requests.clear()

    def append(self, count: int) -> None:
        """`count` more candidate rows, with the next ids."""
        now = "2025-06-01T12:00:00+00:00"
        first = len(self.rows)
        for row_id in range(first, first + count):
            self.rows.append(
                {
                    "id": row_id,
                    "title": f"Bench title {row_id}",
                    "namespace": "pmoves",
                    "content_url": f"s3://media/bench/{row_id}.mp4",
                    "status": "published",
                    "meta": {"jellyfin_item_id": item_id(row_id), "tags": ["bench"]},
                    "created_at": now,
                }
            )
        self.candidates += count

    def row(self, row_id: int) -> dict[str, Any] | None:
        return self.rows[row_id] if 0 < row_id < len(self.rows) else None


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    422: "Unprocessable Entity",
}


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, _encode(data))


def _unauthorized_postgrest() -> Response:
    body = {"code": "PGRST301", "details": None, "hint": None, "message": "JWSError JWSInvalidSignature"}
    return json_response(body, status=401)


def _candidate(row: dict[str, Any]) -> bool:
    return row["status"] == "published" and row["meta"].get("jellyfin_public_url") is None


def _content_range(shown: int, total: int | None) -> str:
    total_text = "*" if total is None else str(total)
    return f"0-{shown - 1}/{total_text}" if shown else f"*/{total_text}"


Handler = Callable[[Request], Awaitable[Response]]


class Upstreams:
    def __init__(self, state: State) -> None:
        self.state = state
        self.exact: dict[tuple[str, str], Handler] = {
            ("GET", "/rest/studio_board"): self.select,
            ("POST", "/rest/rpc/backfill_merge_meta"): self.merge,
            ("POST", "/rest/rpc/backfill_merge_meta_many"): self.merge_many,
            ("POST", "/agent/events/publish"): self.publish,
            ("GET", "/jellyfin/Items"): self.items,
            ("POST", "/_bench/seed"): self.seed,
            ("POST", "/_bench/append"): self.append,
            ("GET", "/_bench/stats"): self.stats,
            ("GET", "/_bench/merges"): self.merges,
            ("GET", "/_bench/publishes"): self.publishes,
            ("POST", "/_bench/reset_stats"): self.reset_stats,
        }

    async def route(self, request: Request) -> Response:
        handler = self.exact.get((request.method, request.path))
        if handler is not None:
            return await handler(request)
        if request.method == "GET" and request.path.startswith("/jellyfin/Items/"):
            return await self.item(request)
        if request.path.startswith("/rest/"):
            return await self.no_table(request)
        return Response(404, b"Not Found", "text/plain")

    async def select(self, request: Request) -> Response:
        if (refused := await self._catalog_answer(request)) is not None:
            return refused
        state = self.state
        query = request.query
        id_filter = query.get("id", "")
        if id_filter.startswith("eq."):
            found = state.row(int(id_filter[3:]))
            rows = [found] if found is not None else []
        elif id_filter.startswith("in.("):
            ids = [int(part) for part in id_filter[4:-1].split(",") if part]
            rows = [r for r in (state.row(i) for i in ids) if r is not None][:MAX_ROWS]
        else:
            after = int(id_filter[3:]) if id_filter.startswith("gt.") else 0
            limit = min(int(query.get("limit", MAX_ROWS)), MAX_ROWS)
            rows = []
            for index in range(after + 1, len(state.rows)):
                row = state.rows[index]
                if row is not None and _candidate(row):
                    rows.append(row)
                    if len(rows) >= limit:
                        break
        response = Response(200, _encode(rows))
        if "count=exact" in request.headers.get("prefer", ""):
            response.headers["Content-Range"] = _content_range(len(rows), state.candidates)
        return response

    async def no_table(self, request: Request) -> Response:
        """Any other table (e.g. the optional `backfill_runs`): PostgREST's answer for a missing one."""
        table = request.path.removeprefix("/rest/")
        body = {
            "code": "PGRST205",
            "details": None,
            "hint": None,
            "message": f"Could not find the table 'public.{table}' in the schema cache",
        }
        return json_response(body, status=404)

    async def merge(self, request: Request) -> Response:
        if (refused := await self._catalog_answer(request)) is not None:
            return refused
        body = _decode(request.body)
        row = self._merge_one(int(body["p_id"]), body.get("p_patch"), body.get("p_defaults"))
        return Response(200, _encode([] if row is None else [row]))

    async def merge_many(self, request: Request) -> Response:
        if (refused := await self._catalog_answer(request)) is not None:
            return refused
        items = _decode(request.body)["p_items"]
        if len({item["id"] for item in items}) != len(items):
            return Response(400, _encode({"code": "22023", "message": "p_items names a row more than once"}))
        merged = [self._merge_one(int(i["id"]), i.get("patch"), i.get("defaults")) for i in items]
        return Response(200, _encode([row for row in merged if row is not None]))

    async def _catalog_answer(self, request: Request) -> Response | None:
        """Count, wait the catalog's latency, then the refusal for a request without the service key."""
        self.state.requests["catalog"] += 1
        await asyncio.sleep(self.state.latency["catalog"])
        if request.headers.get("apikey") != SERVICE_KEY:
            return _unauthorized_postgrest()
        return None

    def _merge_one(self, row_id: int, patch: Any, defaults: Any) -> dict[str, Any] | None:
        state = self.state
        row = state.row(row_id)
        if row is None:
            return None
        was_candidate = _candidate(row)
        row["meta"] = {**(defaults or {}), **row["meta"], **(patch or {})}
        if was_candidate and not _candidate(row):
            state.candidates -= 1
        state.merges.append((row["id"], time.monotonic()))
        return row

    async def _jellyfin_answer(self, request: Request) -> Response | None:
        """Count, wait Jellyfin's latency, then the refusal for a request without auth or userId."""
        self.state.requests["jellyfin"] += 1
        await asyncio.sleep(self.state.latency["jellyfin"])
        if 'Token="' not in request.headers.get("authorization", ""):
            return Response(401, b"Unauthorized", "text/plain")
        if "userId" not in request.query:
            return Response(400, b"userId is required", "text/plain")
        return None

    def _item(self, raw: str) -> dict[str, Any] | None:
        try:
            row_id = int(raw, 16)
        except ValueError:
            return None
        if self.state.row(row_id) is None:
            return None
        return {
            "Name": f"Bench title {row_id}",
            "ServerId": SERVER_ID,
            "Id": raw,
            "Path": f"/media/bench/{row_id}.mp4",
            "RunTimeTicks": 36_000_000_000,
            "ProductionYear": 2024,
            "Type": "Movie",
            "ImageTags": {"Primary": "c0ffee"},
            "Tags": ["bench", "pmoves"],
        }

    async def item(self, request: Request) -> Response:
        """`GET /Items/{id}`: 404 when missing, 400 problem+json for a malformed id."""
        refusal = await self._jellyfin_answer(request)
        if refusal is not None:
            return refusal
        raw = request.path.removeprefix("/jellyfin/Items/")
        item = self._item(raw)
        if item is None:
            try:
                int(raw, 16)
            except ValueError:
                body = _encode({"title": "One or more validation errors occurred."})
                return Response(400, body, "application/problem+json")
            return Response(404, b"", "application/problem+json")
        return Response(200, _encode(item))

    async def items(self, request: Request) -> Response:
        """`GET /Items?ids=a,b`: the ids it has, in any order; the listings of what changed: nothing saved
        since, and as the newest addition one item added long before."""
        refusal = await self._jellyfin_answer(request)
        if refusal is not None:
            return refusal
        if "minDateLastSaved" in request.query:
            return json_response({"Items": [], "TotalRecordCount": 0, "StartIndex": 0})
        if request.query.get("sortBy") == "DateCreated":
            newest = {**(self._item(item_id(1)) or {}), "DateCreated": "2025-01-01T00:00:00.0000000Z"}
            return json_response(
                {"Items": [newest], "TotalRecordCount": len(self.state.rows) - 1, "StartIndex": 0}
            )
        ids = [part for part in request.query.get("ids", "").split(",") if part]
        if not ids:
            return Response(400, b"bench upstream serves only ids= lookups and change listings", "text/plain")
        found = [item for item in (self._item(raw) for raw in ids) if item is not None]
        return json_response({"Items": found, "TotalRecordCount": len(found), "StartIndex": 0})

    async def publish(self, request: Request) -> Response:
        state = self.state
        state.publishes.append(time.monotonic())  # on arrival, before the configured latency
        state.requests["agent_zero"] += 1
        await asyncio.sleep(state.latency["agent_zero"])
        body = _decode(request.body)
        if not isinstance(body, dict) or "topic" not in body or "payload" not in body:
            return json_response({"detail": "topic and payload are required"}, status=422)
        envelope_id = str(uuid.uuid4())
        if state.nats is not None:
            envelope = {
                "id": envelope_id,
                "topic": body["topic"],
                "ts": "2025-06-01T12:00:00Z",
                "version": "v1",
                "source": body.get("source") or "agent-zero",
                "payload": body["payload"],
                **{k: body[k] for k in ("correlation_id", "parent_id") if body.get(k)},
            }
            await state.nats.publish(body["topic"], _encode(envelope))
        return json_response({"published": body["topic"], "id": envelope_id})

    async def seed(self, request: Request) -> Response:
        self.state.seed(int(_decode(request.body)["rows"]))
        return json_response({"rows": len(self.state.rows) - 1})

    async def append(self, request: Request) -> Response:
        self.state.append(int(_decode(request.body)["rows"]))
        return json_response({"rows": len(self.state.rows) - 1})

    async def stats(self, _request: Request) -> Response:
        state = self.state
        return json_response(
            {"requests": dict(state.requests), "candidates": state.candidates, "merged": len(state.merges)}
        )

    async def merges(self, _request: Request) -> Response:
        return json_response(self.state.merges)

    async def publishes(self, _request: Request) -> Response:
        return json_response(self.state.publishes)

    async def reset_stats(self, _request: Request) -> Response:
        self.state.requests.clear()
        self.state.merges.clear()
        self.state.publishes.clear()
        return json_response({"ok": True})


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive: parse a request, await its handler, write the answer, repeat."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False
        self._task: asyncio.Task[None] | None = None  # the request being answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is no subclass)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._next()

    def _next(self) -> None:
        request = self._parse()
        if request is not None:
            self._busy = True
            self._task = asyncio.ensure_future(self._answer(request))

    def _parse(self) -> Request | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(self._buffer) < end + 4 + length:
            return None
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        method, target, _version = lines[0].split(" ", 2)
        path, _, query = target.partition("?")
        return Request(method, unquote(path), dict(parse_qsl(query)), headers, body)

    async def _answer(self, request: Request) -> None:
        try:
            response = await self._upstreams.route(request)
        except Exception as exc:  # a benchmark bug must show as a 500, not a hang
            response = Response(500, repr(exc).encode(), "text/plain")
        if self._transport is None:
            return
        extra = "".join(f"{k}: {v}\r\n" for k, v in response.headers.items())
        head = (
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}\r\n"
            f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
            f"{extra}\r\n"
        )
        self._transport.write(head.encode("latin-1") + response.body)
        self._busy = False
        self._next()


async def _main(args: argparse.Namespace) -> None:
    latency = {
        "catalog": args.catalog_ms / 1000,
        "jellyfin": args.jellyfin_ms / 1000,
        "agent_zero": args.agent_ms / 1000,
    }
    nc = await nats.connect(args.nats_url) if args.nats_url else None
    upstreams = Upstreams(State(latency, nc))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(upstreams), "127.0.0.1", args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"READY http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.upstreams", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--catalog-ms", type=float, default=5.0)
    parser.add_argument("--jellyfin-ms", type=float, default=20.0)
    parser.add_argument("--agent-ms", type=float, default=10.0)
    parser.add_argument("--nats-url", help="publish Agent Zero's envelopes here, as it does")
    # the worker's own choice of loop: on a shared 2-core machine, the upstreams' CPU is taken from the
    # workers being measured (uvloop: about a third less per request here)
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    args = parser.parse_args(argv)
    try:
        event_loop_runner(args.loop, "--loop")(_main(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
