"""Light local upstreams for the benchmark: PostgREST, Jellyfin and Agent Zero with fixed latency.

The project's doubles (`backfill_doubles`) are strict and complete, which costs CPU per request (query
parsing over every row, contract checks). Here each service answers only what the backfill asks, in
the same shapes and status codes, from in-memory state indexed by row id, after sleeping its configured
latency, so the upstream side costs little CPU and the benchmark measures the client.

Run as its own process: `python -m bench.upstreams --port 0` prints `READY <base-url>` and serves:

- `GET  /rest/studio_board` (`id=eq.N`, `id=in.(...)`, candidate pages `id=gt.N&order=id.asc&limit=K`,
  `Prefer: count=exact`) and `POST /rest/rpc/backfill_merge_meta` (catalog latency each);
- `GET  /jellyfin/Items/{id}?userId=...` (Jellyfin latency);
- `POST /agent/events/publish` (Agent Zero latency);
- control: `POST /_bench/seed {"rows": N}`, `GET /_bench/stats`, `POST /_bench/reset_stats`.

Every merge is timestamped with `time.monotonic()` (one clock for all processes on Linux), so the
benchmark can measure throughput and per-row latency from the upstream side of the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from typing import Any

import msgspec
from aiohttp import web

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
    def __init__(self, latency: dict[str, float]) -> None:
        self.latency = latency
        self.rows: list[dict[str, Any] | None] = [None]  # index = row id
        self.candidates = 0
        self.requests: Counter[str] = Counter()
        self.merges: list[tuple[int, float]] = []

    def seed(self, count: int) -> None:
        now = "2025-06-01T12:00:00+00:00"
        self.rows = [None]
        for row_id in range(1, count + 1):
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
        self.candidates = count
        self.merges.clear()
        self.requests.clear()

    def row(self, row_id: int) -> dict[str, Any] | None:
        return self.rows[row_id] if 0 < row_id < len(self.rows) else None


def _unauthorized_postgrest() -> web.Response:
    body = {"code": "PGRST301", "details": None, "hint": None, "message": "JWSError JWSInvalidSignature"}
    return web.json_response(body, status=401)


def _candidate(row: dict[str, Any]) -> bool:
    return row["status"] == "published" and row["meta"].get("jellyfin_public_url") is None


def _content_range(shown: int, total: int | None) -> str:
    total_text = "*" if total is None else str(total)
    return f"0-{shown - 1}/{total_text}" if shown else f"*/{total_text}"


class Upstreams:
    def __init__(self, state: State) -> None:
        self.state = state

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/rest/studio_board", self.select)
        app.router.add_post("/rest/rpc/backfill_merge_meta", self.merge)
        app.router.add_get("/jellyfin/Items/{item_id}", self.item)
        app.router.add_post("/agent/events/publish", self.publish)
        app.router.add_route("*", "/rest/{table}", self.no_table)
        app.router.add_post("/_bench/seed", self.seed)
        app.router.add_get("/_bench/stats", self.stats)
        app.router.add_post("/_bench/reset_stats", self.reset_stats)
        return app

    async def select(self, request: web.Request) -> web.Response:
        state = self.state
        state.requests["catalog"] += 1
        await asyncio.sleep(state.latency["catalog"])
        if request.headers.get("apikey") != SERVICE_KEY:
            return _unauthorized_postgrest()
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
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if "count=exact" in request.headers.get("Prefer", ""):
            headers["Content-Range"] = _content_range(len(rows), state.candidates)
        return web.Response(body=_encode(rows), headers=headers)

    async def no_table(self, request: web.Request) -> web.Response:
        """Any other table (e.g. the optional `backfill_runs`): PostgREST's answer for a missing one."""
        table = request.match_info["table"]
        body = {
            "code": "PGRST205",
            "details": None,
            "hint": None,
            "message": f"Could not find the table 'public.{table}' in the schema cache",
        }
        return web.json_response(body, status=404)

    async def merge(self, request: web.Request) -> web.Response:
        state = self.state
        state.requests["catalog"] += 1
        await asyncio.sleep(state.latency["catalog"])
        if request.headers.get("apikey") != SERVICE_KEY:
            return _unauthorized_postgrest()
        body = _decode(await request.read())
        row = state.row(int(body["p_id"]))
        if row is None:
            return web.Response(body=b"[]", content_type="application/json")
        was_candidate = _candidate(row)
        row["meta"] = {**(body.get("p_defaults") or {}), **row["meta"], **(body.get("p_patch") or {})}
        if was_candidate and not _candidate(row):
            state.candidates -= 1
        state.merges.append((row["id"], time.monotonic()))
        return web.Response(body=_encode([row]), content_type="application/json")

    async def item(self, request: web.Request) -> web.Response:
        state = self.state
        state.requests["jellyfin"] += 1
        await asyncio.sleep(state.latency["jellyfin"])
        if 'Token="' not in request.headers.get("Authorization", ""):
            return web.Response(status=401, text="Unauthorized")
        if "userId" not in request.query:
            return web.Response(status=400, text="userId is required")
        raw = request.match_info["item_id"]
        try:
            row_id = int(raw, 16)
        except ValueError:
            return web.json_response({"title": "One or more validation errors occurred."}, status=400)
        if state.row(row_id) is None:
            return web.Response(status=404)
        item = {
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
        return web.Response(body=_encode(item), content_type="application/json")

    async def publish(self, request: web.Request) -> web.Response:
        state = self.state
        state.requests["agent_zero"] += 1
        await asyncio.sleep(state.latency["agent_zero"])
        body = _decode(await request.read())
        if not isinstance(body, dict) or "topic" not in body or "payload" not in body:
            return web.json_response({"detail": "topic and payload are required"}, status=422)
        envelope_id = f"{state.requests['agent_zero']:08x}-0000-4000-8000-000000000000"
        return web.json_response({"published": body["topic"], "id": envelope_id})

    async def seed(self, request: web.Request) -> web.Response:
        body = _decode(await request.read())
        self.state.seed(int(body["rows"]))
        return web.json_response({"rows": len(self.state.rows) - 1})

    async def stats(self, _request: web.Request) -> web.Response:
        state = self.state
        return web.Response(
            body=_encode(
                {"requests": dict(state.requests), "candidates": state.candidates, "merges": state.merges}
            ),
            content_type="application/json",
        )

    async def reset_stats(self, _request: web.Request) -> web.Response:
        self.state.requests.clear()
        self.state.merges.clear()
        return web.json_response({"ok": True})


async def _main(args: argparse.Namespace) -> None:
    latency = {
        "catalog": args.catalog_ms / 1000,
        "jellyfin": args.jellyfin_ms / 1000,
        "agent_zero": args.agent_ms / 1000,
    }
    runner = web.AppRunner(Upstreams(State(latency)).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    print(f"READY http://127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.upstreams", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--catalog-ms", type=float, default=5.0)
    parser.add_argument("--jellyfin-ms", type=float, default=20.0)
    parser.add_argument("--agent-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
