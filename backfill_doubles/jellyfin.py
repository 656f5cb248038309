"""A faithful local double of the Jellyfin server API the backfill uses (docs/upstreams.md §2).

State is plain and open: `double.items[id]` holds each item in wire (PascalCase) form, `requests`
logs `(method, path, query)`, `calls` counts answered calls per route (plus `unauthorized`), and the
fault knobs of `FaultInjector` (`fail_rate`, `fail_next`, `hang_rate`, `hang_seconds`, `latency`)
apply to authenticated calls. The traps of the real server are kept on purpose: the all-zero id
returns the root folder, `/Items` without `recursive=true` lists only the libraries, and `ids=` made
only of invalid ids filters nothing. Each item carries when it was added (`DateCreated`, in a DTO only when
asked for) and, internally, when Jellyfin last saved it (`minDateLastSaved`); `version` decides how the
saved-since filter behaves (up to 10.10 `minDateLastSaved` alone matches nothing: `jellyfin_items`).
"""

from __future__ import annotations

import random
import struct
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from backfill_doubles.faults import Fault, FaultInjector
from backfill_doubles.jellyfin_auth import find_token
from backfill_doubles.jellyfin_items import (
    SAVED,
    ZERO_ID,
    ItemQuery,
    QueryError,
    format_premiere,
    parse_guid,
    parse_query,
    render_item,
    run_query,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROBLEM = "application/problem+json"
_PUBLIC_ROUTES = frozenset({"image", "public_info"})
_NOT_FOUND = {
    "type": "https://tools.ietf.org/html/rfc9110#section-15.5.5",
    "title": "Not Found",
    "status": 404,
}
_BAD_REQUEST_TEXT = "Error processing request."


def _tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x20\x40\x60"))
        + chunk(b"IEND", b"")
    )


PNG = _tiny_png()


def _invalid(param: str, value: str) -> web.Response:
    body = {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": {param: [f"The value '{value}' is not valid."]},
    }
    return web.json_response(body, status=400, content_type=PROBLEM)


def _not_found() -> web.Response:
    return web.json_response(_NOT_FOUND, status=404, content_type=PROBLEM)


def _lower_query(request: web.Request) -> dict[str, str]:
    """ASP.NET binds query parameters case-insensitively."""
    return {key.lower(): value for key, value in request.query.items()}


class JellyfinDouble(FaultInjector):
    """Jellyfin 10.9-12.0 as seen through an API key: `/Items`, `/Items/{id}`, images."""

    def __init__(
        self,
        api_key: str,
        user_id: str,
        server_id: str,
        legacy_auth: bool = False,
        seed: int = 0,
        version: str = "10.10.7",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`clock`: the server's time, for `DateCreated` and when items are saved."""
        super().__init__(seed)
        self.version = version
        self.clock = clock
        self.api_key = api_key
        self.user_id = parse_guid(user_id) or user_id
        self.server_id = server_id
        self.legacy_auth = legacy_auth
        self.items: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.calls: Counter[str] = Counter()
        self.max_url_bytes = 8192  # Kestrel's request-line limit: keep `ids=` batches under it
        self._rng = random.Random(seed)
        self.root = self._folder("root", "AggregateFolder")
        self.libraries = [self._folder("Movies", "CollectionFolder", CollectionType="movies")]

    def add_item(
        self,
        name: str,
        *,
        run_time_ticks: int | None = None,
        year: int | None = None,
        premiere_date: date | datetime | str | None = None,
        image: bool = True,
        item_type: str = "Movie",
        tags: Iterable[str] = (),
        path: str | None = None,
        played: bool = False,
        saved: bool = True,
    ) -> dict[str, Any]:
        """Add an item with a seeded id and return its stored (wire-form) record; `played`: the
        configured user has played it (`UserData.Played`). `saved`: as a library scan does, the item
        is saved again by its metadata refresh right after it is created (`DateLastSaved` set); False
        leaves it as created alone, which no saved-since filter matches."""
        item_id = self._new_id()
        premiere = format_premiere(premiere_date) if premiere_date is not None else None
        if year is None and premiere is not None:
            year = int(premiere[:4])
        label = f"{name} ({year})" if year else name
        item: dict[str, Any] = {
            "Name": name,
            "ServerId": self.server_id,
            "Id": item_id,
            "Path": path or f"/media/movies/{label}/{label}.mkv",
            "PremiereDate": premiere,
            "RunTimeTicks": run_time_ticks,
            "ProductionYear": year,
            "IsFolder": False,
            "Type": item_type,
            "MediaType": "Video",
            "Tags": list(tags),
            "Genres": [],
            "ProviderIds": {},
            "UserData": self._user_data(item_id, played),
            "ImageTags": {"Primary": self._new_id()} if image else {},
            "DateCreated": format_premiere(self.clock()),
            SAVED: self.clock() if saved else None,
        }
        self.items[item_id] = item
        return item

    def save_item(self, item_id: str, **changes: Any) -> dict[str, Any]:
        """Change an item's wire fields (a metadata edit, or a refresh) and save it: `DateLastSaved` now."""
        item = self.items[parse_guid(item_id) or item_id]
        item.update(changes)
        item[SAVED] = self.clock()
        return item

    @property
    def legacy_saved_filter(self) -> bool:
        """Up to 10.10, `minDateLastSaved` is compared with the ForUser parameter (jellyfin_items)."""
        major, minor = (int(part) for part in self.version.split(".")[:2])
        return (major, minor) < (10, 11)

    def delete_item(self, item_id: str) -> None:
        """Remove an item; later lookups answer 404."""
        self.items.pop(parse_guid(item_id) or item_id, None)

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this double's state."""
        # Accept long lines at the socket so the middleware can answer Kestrel's 414 itself.
        app = web.Application(middlewares=[self._middleware], handler_args={"max_line_size": 65536})
        app.router.add_get("/Items", self._list_items, name="list_items")
        app.router.add_get("/Items/{item_id}", self._get_item, name="get_item")
        app.router.add_get("/Users/{user_id}/Items/{item_id}", self._get_user_item, name="get_user_item")
        app.router.add_get("/Items/{item_id}/Images/{image_type}", self._image, name="image")
        app.router.add_get("/System/Info/Public", self._public_info, name="public_info")
        return app

    def _new_id(self) -> str:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4).hex

    def _folder(self, name: str, kind: str, **extra: Any) -> dict[str, Any]:
        folder_id = self._new_id()
        return {
            "Name": name,
            "ServerId": self.server_id,
            "Id": folder_id,
            "IsFolder": True,
            "Type": kind,
            **extra,
        }

    def _user_data(self, item_id: str, played: bool = False) -> dict[str, Any]:
        return {
            "PlaybackPositionTicks": 0,
            "PlayCount": int(played),
            "IsFavorite": False,
            "Played": played,
            "Key": item_id,
            "ItemId": item_id,
        }

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        if len(request.raw_path) > self.max_url_bytes:
            return web.Response(status=414)
        route = request.match_info.route.name
        if route is None or route in _PUBLIC_ROUTES:
            await self.delay(Fault.NONE)
            return await handler(request)
        if find_token(request.headers, _lower_query(request), legacy=self.legacy_auth) != self.api_key:
            self.calls["unauthorized"] += 1
            return web.Response(status=401)
        fault = self.draw()
        await self.delay(fault)
        if fault is Fault.FAIL:
            return web.Response(status=500, text=_BAD_REQUEST_TEXT)
        if fault is Fault.TIMEOUT:
            return web.Response(status=504, text="Gateway Timeout")
        self.calls[route] += 1
        return await handler(request)

    def _check_user(self, raw: str | None) -> web.Response | None:
        """Jellyfin needs a user with an API key: 400 without one, 404 for an unknown one."""
        if not raw:
            return web.Response(status=400, text=_BAD_REQUEST_TEXT)
        user_id = parse_guid(raw)
        if user_id is None:
            return _invalid("userId", raw)
        return None if user_id == self.user_id else _not_found()

    def _lookup(self, raw_id: str, raw_user: str | None) -> web.Response:
        item_id = parse_guid(raw_id)
        if item_id is None:
            return _invalid("itemId", raw_id)
        refused = self._check_user(raw_user)
        if refused is not None:
            return refused
        if item_id == ZERO_ID:
            return web.json_response(render_item(self.root, None))
        item = self.items.get(item_id) or next((f for f in self.libraries if f["Id"] == item_id), None)
        return _not_found() if item is None else web.json_response(render_item(item, None))

    async def _get_item(self, request: web.Request) -> web.Response:
        return self._lookup(request.match_info["item_id"], _lower_query(request).get("userid"))

    async def _get_user_item(self, request: web.Request) -> web.Response:
        return self._lookup(request.match_info["item_id"], request.match_info["user_id"])

    async def _list_items(self, request: web.Request) -> web.Response:
        params = _lower_query(request)
        refused = self._check_user(params.get("userid"))
        if refused is not None:
            return refused
        try:
            query = parse_query(params)
        except QueryError as exc:
            return _invalid(exc.param, exc.value)
        return web.json_response(self._listing(query))

    def _listing(self, query: ItemQuery) -> dict[str, Any]:
        if not query.recursive and not query.ids:
            # The real controller returns the user's root children here, ignoring every filter.
            folders = [render_item(folder, query.fields) for folder in self.libraries]
            return {"Items": folders, "TotalRecordCount": len(folders), "StartIndex": query.start_index}
        page, total = run_query(list(self.items.values()), query, self.legacy_saved_filter)
        dtos = [render_item(item, query.fields) for item in page]
        if not query.enable_user_data:
            dtos = [{k: v for k, v in dto.items() if k != "UserData"} for dto in dtos]
        return {"Items": dtos, "TotalRecordCount": total, "StartIndex": query.start_index}

    async def _image(self, request: web.Request) -> web.Response:
        item_id = parse_guid(request.match_info["item_id"]) or ""
        item = self.items.get(item_id)
        kind = request.match_info["image_type"]
        if item is None or not (item.get("ImageTags") or {}).get(kind.capitalize()):
            return _not_found()
        return web.Response(body=PNG, content_type="image/png")

    async def _public_info(self, request: web.Request) -> web.Response:
        info = {
            "LocalAddress": f"{request.scheme}://{request.host}",
            "ServerName": "jellyfin-double",
            "Version": self.version,
            "ProductName": "Jellyfin Server",
            "Id": self.server_id,
            "StartupWizardCompleted": True,
        }
        return web.json_response(info)
