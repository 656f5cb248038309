"""What the system is compared against, measured in the same run on the same upstreams.

- `raw_publish`: nats-py's own `publish_async` loop, the same subjects, bodies and headers the producer
  sends, every acknowledgement awaited; no catalog read.
- `naive_loop`: the plan's outline (`JELLYFIN_BACKFILL_PLAN.md`): read candidates once, then per row a
  new `httpx.AsyncClient` per call, sequentially: GET the item, POST the event, write the row.
- `http_ceiling`: a worker's requests per row without batching (read row, GET item, POST event in
  republish mode, merge meta) issued by plain aiohttp on one session at a given concurrency, no NATS,
  no parsing beyond reading the bodies: the most one process could do against these upstreams.
- `http_ceiling_batched`: the same, batched as a worker batches them: one `id=in.(...)` read, one
  `ids=` lookup and one `backfill_merge_meta_many` per `batch` rows, the publish still per row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import httpx
import msgspec
import nats

from backfill.adapters.agent_zero import TOPIC
from backfill.adapters.jellyfin import auth_header
from backfill.core.wire import Header, Mode, encode_request, msg_id, new_request, request_subject
from bench.upstreams import API_KEY, SERVICE_KEY, USER_ID, item_id

_encode = msgspec.json.encode
_CATALOG_HEADERS = {"apikey": SERVICE_KEY, "Authorization": f"Bearer {SERVICE_KEY}"}
_JELLYFIN_HEADERS = {"Authorization": auth_header(API_KEY)}
# A payload of the size and shape a worker republishes (content.published.v1, about 700 bytes).
_PAYLOAD = {
    "artifact_uri": "s3://media/bench/1.mp4",
    "published_path": "s3://media/bench/1.mp4",
    "namespace": "pmoves",
    "title": "Bench title 1",
    "description": None,
    "tags": ["bench", "pmoves"],
    "jellyfin_item_id": item_id(1),
    "jellyfin_public_url": "https://jellyfin.example.org/web/#/details?id=1&serverId=f",
    "thumbnail_url": "https://jellyfin.example.org/Items/1/Images/Primary?tag=c0ffee",
    "duration": 3600.0,
    "meta": {"jellyfin_item_id": item_id(1), "tags": ["bench"]},
}


async def raw_publish(nats_url: str, prefix: str, rows: range, run_id: str, mode: Mode) -> float:
    """Seconds to publish one request per row with `publish_async` and have every ack back."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream(publish_async_max_pending=4000)
        started = time.perf_counter()
        for row_id in rows:
            body = encode_request(new_request(row_id, "2025-10-14", mode, run_id))
            headers = {Header.MSG_ID: msg_id(row_id, run_id), Header.RUN_ID: run_id}
            await js.publish_async(request_subject(prefix, row_id), body, headers=headers)
        await js.publish_async_completed()
        return time.perf_counter() - started
    finally:
        await nc.close()


async def naive_loop(base_url: str, count: int, mode: Mode) -> float:
    """Rows per second of the plan's sequential outline (new client per call), over `count` rows."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(
            f"{base_url}/rest/studio_board",
            headers=_CATALOG_HEADERS,
            params={
                "status": "eq.published",
                "meta->>jellyfin_public_url": "is.null",
                "order": "id.asc",
                "limit": count,
            },
        )
        response.raise_for_status()
        rows = response.json()
    started = time.perf_counter()
    for row in rows:
        async with httpx.AsyncClient(timeout=10.0, headers=_JELLYFIN_HEADERS) as client:
            item_response = await client.get(
                f"{base_url}/jellyfin/Items/{row['meta']['jellyfin_item_id']}", params={"userId": USER_ID}
            )
            item_response.raise_for_status()
            item = item_response.json()
        patch = {"jellyfin_public_url": f"https://jellyfin.example.org/web/#/details?id={item['Id']}"}
        if mode is Mode.REPUBLISH:
            async with httpx.AsyncClient(timeout=10.0) as client:
                published = await client.post(
                    f"{base_url}/agent/events/publish",
                    json={
                        "topic": TOPIC,
                        "payload": {**_PAYLOAD, "title": row["title"]},
                        "source": "backfill",
                    },
                )
                published.raise_for_status()
                patch["backfill_event_id"] = published.json()["id"]
        async with httpx.AsyncClient(timeout=10.0, headers=_CATALOG_HEADERS) as client:
            merged = await client.post(
                f"{base_url}/rest/rpc/backfill_merge_meta", json={"p_id": row["id"], "p_patch": patch}
            )
            merged.raise_for_status()
    return len(rows) / (time.perf_counter() - started)


_PUBLISH_BODY = _encode({"topic": TOPIC, "payload": _PAYLOAD, "source": "backfill"})
_JSON = {"Content-Type": "application/json"}
Lane = Callable[[aiohttp.ClientSession], Awaitable[int]]


async def _request(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> None:
    async with session.request(method, url, **kwargs) as response:
        response.raise_for_status()
        await response.read()


_MERGE_HEADERS = {**_CATALOG_HEADERS, **_JSON}
_PATCH = {"jellyfin_public_url": "https://x"}


async def _publish(session: aiohttp.ClientSession, base_url: str, mode: Mode) -> None:
    """The event a row costs in republish mode (nothing in metadata-only mode)."""
    if mode is Mode.REPUBLISH:
        await _request(session, "POST", f"{base_url}/agent/events/publish", data=_PUBLISH_BODY, headers=_JSON)


async def _publish_and_merge(session: aiohttp.ClientSession, base_url: str, row_id: int, mode: Mode) -> None:
    """What every row costs after its lookups, one by one: the event (republish mode), the meta merge."""
    await _publish(session, base_url, mode)
    merge = _encode({"p_id": row_id, "p_patch": _PATCH})
    url = f"{base_url}/rest/rpc/backfill_merge_meta"
    await _request(session, "POST", url, data=merge, headers=_MERGE_HEADERS)


async def _timed(lane: Lane, lanes: int, concurrency: int) -> tuple[float, float]:
    """(rows per second, CPU seconds per 1000 rows) of `lanes` copies of `lane` on one session."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started, cpu = time.perf_counter(), time.process_time()
        done = sum(await asyncio.gather(*(lane(session) for _ in range(lanes))))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return done / seconds, cpu / done * 1000


async def http_ceiling(base_url: str, row_ids: range, mode: Mode, concurrency: int) -> tuple[float, float]:
    """(rows per second, CPU seconds per 1000 rows) when one aiohttp session issues each row's requests,
    `concurrency` rows at once."""
    ids: Iterator[int] = iter(row_ids)

    async def lane(session: aiohttp.ClientSession) -> int:
        done = 0
        for row_id in ids:
            params = {"id": f"eq.{row_id}"}
            await _request(
                session, "GET", f"{base_url}/rest/studio_board", params=params, headers=_CATALOG_HEADERS
            )
            item_url = f"{base_url}/jellyfin/Items/{item_id(row_id)}"
            await _request(session, "GET", item_url, params={"userId": USER_ID}, headers=_JELLYFIN_HEADERS)
            await _publish_and_merge(session, base_url, row_id, mode)
            done += 1
        return done

    return await _timed(lane, concurrency, concurrency)


async def http_ceiling_batched(
    base_url: str, row_ids: range, mode: Mode, concurrency: int, batch: int
) -> tuple[float, float]:
    """(rows per second, CPU seconds per 1000 rows) with batched reads, lookups and merges,
    `concurrency` rows in flight in groups of `batch`."""
    ids = list(row_ids)
    chunks: Iterator[list[int]] = iter([ids[i : i + batch] for i in range(0, len(ids), batch)])

    async def lane(session: aiohttp.ClientSession) -> int:
        done = 0
        for chunk in chunks:
            params = {"id": f"in.({','.join(map(str, chunk))})"}
            await _request(
                session, "GET", f"{base_url}/rest/studio_board", params=params, headers=_CATALOG_HEADERS
            )
            lookup = {"userId": USER_ID, "ids": ",".join(item_id(r) for r in chunk)}
            await _request(
                session, "GET", f"{base_url}/jellyfin/Items", params=lookup, headers=_JELLYFIN_HEADERS
            )
            await asyncio.gather(*(_publish(session, base_url, mode) for _ in chunk))
            merge = _encode({"p_items": [{"id": r, "patch": _PATCH} for r in chunk]})
            url = f"{base_url}/rest/rpc/backfill_merge_meta_many"
            await _request(session, "POST", url, data=merge, headers=_MERGE_HEADERS)
            done += len(chunk)
        return done

    return await _timed(lane, max(concurrency // batch, 1), concurrency)
