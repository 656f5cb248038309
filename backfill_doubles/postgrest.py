"""A faithful local double of PostgREST / Supabase REST over table `studio_board` (docs/upstreams.md §3).

State is plain: `double.rows[id]` is a row dict, `requests` logs `(method, path, query)`, `calls`
counts `select` / `patch` / `rpc` / `unauthorized`. The real behaviours that bite are kept:

- responses are silently capped at `max_rows` (1000), whatever `limit` says;
- `PATCH` replaces each given column whole (a `meta` patch drops every other key);
- without `order=` rows come back in "heap" order, and an updated row moves to the end;
- `POST /rpc/backfill_merge_meta` merges atomically, mirroring
  `meta = coalesce(p_defaults,'{}') || coalesce(meta,'{}') || coalesce(p_patch,'{}')` in a SQL
  function `returns setof studio_board` that skips a row whose meta is not an object; with
  `rpc_installed=False` it is 404 `PGRST202`;
- `POST /rpc/backfill_merge_meta_many` (`p_items`: `[{id, patch, defaults}]`) does the same for many
  rows and refuses, like the SQL function, anything but an array of objects with distinct ids (400
  `22023`); with `batch_rpc_installed=False` (an install older than the function) it is 404 `PGRST202`.

`before_write(row_id)` runs just before a PATCH or the RPC applies, after the rows to change were
picked; the PATCH filter is checked again afterwards, as PostgreSQL does, so a test can change a row
"under" an optimistic writer and see its update match nothing.

Other tables exist only once installed (`install_table`): they answer selects with the same grammar,
and inserts (`POST`, one object or an array) that upsert on their unique column with
`Prefer: resolution=merge-duplicates` and answer a duplicate otherwise with 409 `23505`. An upsert
naming `?on_conflict=` a column without a unique constraint (a table installed with `unique=None`, or
another column) is 400 `42P10`, as PostgreSQL answers PostgREST. A table not installed is 404
`PGRST205`, as in PostgREST.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from backfill_doubles.faults import Fault, FaultInjector
from backfill_doubles.postgrest_query import (
    COLUMNS,
    STUDIO_BOARD,
    TABLE,
    PostgrestError,
    Table,
    matches_all,
    order_rows,
    parse_count,
    parse_filters,
    parse_order,
    parse_select,
    project,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RPC_NAME = "backfill_merge_meta"
BATCH_RPC_NAME = "backfill_merge_meta_many"
_RPC_ARGS = frozenset({"p_id", "p_patch"})
_UNAUTHORIZED = (401, "PGRST301", "JWSError JWSInvalidSignature")
_FAULT_ERRORS = {
    Fault.FAIL: (503, "PGRST002", "Could not query the database for the schema cache. Retrying."),
    Fault.TIMEOUT: (504, "PGRST003", "Timed out acquiring connection from connection pool."),
}


def _error_response(error: PostgrestError) -> web.Response:
    return web.json_response(error.body, status=error.status)


def _prefer(request: web.Request) -> set[str]:
    return {part.strip() for header in request.headers.getall("Prefer", []) for part in header.split(",")}


def _missing_function(function: str, args: list[str]) -> PostgrestError:
    names = ", ".join(sorted(args))
    return PostgrestError(
        404,
        "PGRST202",
        f"Could not find the function public.{function}({names}) in the schema cache",
        f"Searched for the function public.{function} with parameters {names} or with a single unnamed "
        "json/jsonb parameter, but no matches were found in the schema cache.",
    )


def _object_meta(row: dict[str, Any]) -> bool:
    """The functions' guard: they merge only into a meta that is null or a JSON object."""
    return row.get("meta") is None or isinstance(row.get("meta"), dict)


def _invalid_items(message: str) -> PostgrestError:
    return PostgrestError(400, "22023", message)


def _batch_items(p_items: Any) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    """(id, patch, defaults) per item, refused as `backfill_merge_meta_many` refuses them."""
    if not isinstance(p_items, list):
        raise _invalid_items('p_items must be a JSON array of {"id", "patch", "defaults"} objects')
    if not all(isinstance(item, dict) for item in p_items):
        raise _invalid_items("every item of p_items must be a JSON object")
    ids = [item.get("id") for item in p_items]
    if any(i is None for i in ids):
        raise _invalid_items('every item of p_items needs an "id"')
    if any(not isinstance(i, int) or isinstance(i, bool) for i in ids):
        raise PostgrestError(400, "22P02", "invalid input syntax for type bigint")
    if len(set(ids)) != len(ids):
        raise _invalid_items("p_items names a row more than once")
    parsed = []
    for item in p_items:
        patch, defaults = item.get("patch") or {}, item.get("defaults") or {}
        if not isinstance(patch, dict) or not isinstance(defaults, dict):
            raise _invalid_items("patch and defaults must be json objects")
        parsed.append((int(item["id"]), patch, defaults))
    return parsed


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.text())
    except ValueError:
        raise PostgrestError(400, "PGRST102", "Empty or invalid json") from None


def _upsert(
    table: Table, unique: str | None, rows: list[dict[str, Any]], record: Any, merge: bool
) -> dict[str, Any]:
    """Insert `record`, or with `merge` overwrite the given columns of the row it conflicts with."""
    if not isinstance(record, dict):
        raise PostgrestError(400, "PGRST102", "Empty or invalid json")
    for name in record:
        if name not in table.columns:
            raise PostgrestError(
                400, "PGRST204", f"Could not find the '{name}' column of '{table.name}' in the schema cache"
            )
    existing = None
    if unique is not None and record.get(unique) is not None:
        existing = next((row for row in rows if row.get(unique) == record.get(unique)), None)
    if existing is None:
        row = dict.fromkeys(table.columns) | record
        rows.append(row)
        return row
    if not merge:
        detail = f"Key ({unique})=({record.get(unique)}) already exists."
        raise PostgrestError(
            409, "23505", f'duplicate key value violates unique constraint "{table.name}_key"', detail
        )
    existing.update(record)
    return existing


def _content_range(offset: int, shown: int, total: int | None) -> str:
    total_text = "*" if total is None else str(total)
    if shown == 0 or total == 0:
        return f"*/{total_text}"
    return f"{offset}-{offset + shown - 1}/{total_text}"


class PostgrestDouble(FaultInjector):
    """PostgREST 12-13 serving `studio_board` and the `backfill_merge_meta` RPC."""

    def __init__(
        self,
        service_key: str,
        rpc_installed: bool = True,
        base_path: str = "",
        seed: int = 0,
        batch_rpc_installed: bool | None = None,
    ) -> None:
        """`batch_rpc_installed` defaults to `rpc_installed` (the shipped SQL installs both)."""
        super().__init__(seed)
        self.service_key = service_key
        self.rpc_installed = rpc_installed
        self.batch_rpc_installed = rpc_installed if batch_rpc_installed is None else batch_rpc_installed
        self.base_path = base_path.rstrip("/")
        self.rows: dict[int, dict[str, Any]] = {}
        self.max_rows = 1000
        self.before_write: Callable[[int], None] | None = None
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.calls: Counter[str] = Counter()
        self.tables: dict[
            str, tuple[Table, str | None, list[dict[str, Any]]]
        ] = {}  # name -> (table, unique, rows)
        self._next_id = 1

    def install_table(self, table: Table, unique: str | None) -> list[dict[str, Any]]:
        """Serve `table` too (`unique`: the column with a unique constraint inserts conflict on, None for
        none); returns its rows, in insertion order, for a test to seed and read."""
        rows: list[dict[str, Any]] = []
        self.tables[table.name] = (table, unique, rows)
        return rows

    def add_row(self, **columns: Any) -> dict[str, Any]:
        """Insert a row (id auto-increments unless given) and return the stored dict."""
        unknown = set(columns) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown columns {sorted(unknown)}")
        row_id = int(columns.get("id") or self._next_id)
        self._next_id = max(self._next_id, row_id + 1)
        row = dict.fromkeys(COLUMNS) | {"meta": {}, "created_at": datetime.now(UTC).isoformat()} | columns
        row["id"] = row_id
        self.rows[row_id] = row
        return row

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this double's state."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post(f"{self.base_path}/rpc/{{function}}", self._rpc, name="rpc")
        app.router.add_get(f"{self.base_path}/{{table}}", self._select, name="select")
        app.router.add_patch(f"{self.base_path}/{{table}}", self._patch, name="patch")
        app.router.add_post(f"{self.base_path}/{{table}}", self._insert, name="insert")
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.query)))
        route = request.match_info.route.name
        if route is None:
            return await handler(request)
        try:
            self._authorize(request)
            fault = self.draw()
            await self.delay(fault)
            if fault in _FAULT_ERRORS:
                return _error_response(PostgrestError(*_FAULT_ERRORS[fault]))
            self.calls[route] += 1
            return await handler(request)
        except PostgrestError as error:
            return _error_response(error)

    def _authorize(self, request: web.Request) -> None:
        bearer = request.headers.get("Authorization")
        if request.headers.get("apikey") != self.service_key or (
            bearer is not None and bearer != f"Bearer {self.service_key}"
        ):
            self.calls["unauthorized"] += 1
            raise PostgrestError(*_UNAUTHORIZED)
        profile = request.headers.get("Accept-Profile") or request.headers.get("Content-Profile")
        if profile is not None and profile != "public":
            hint = "Only the following schemas are exposed: public"
            raise PostgrestError(406, "PGRST106", f"Invalid schema: {profile}", hint=hint)

    def _check_table(self, request: web.Request) -> None:
        table = request.match_info["table"]
        if table != TABLE:
            raise PostgrestError(
                404, "PGRST205", f"Could not find the table 'public.{table}' in the schema cache"
            )

    def _table(self, request: web.Request) -> tuple[Table, list[dict[str, Any]]]:
        """The table a request names and its rows: studio_board, or an installed one."""
        installed = self.tables.get(request.match_info["table"])
        if installed is not None:
            return installed[0], installed[2]
        self._check_table(request)
        return STUDIO_BOARD, list(self.rows.values())

    async def _select(self, request: web.Request) -> web.Response:
        table, rows = self._table(request)
        filters = parse_filters(request.query.items(), table)
        columns = parse_select(request.query.get("select"), table)
        order = parse_order(request.query.get("order"), table)
        limit = parse_count(request.query.get("limit"), "limit")
        offset = parse_count(request.query.get("offset"), "offset") or 0
        matched = [row for row in rows if matches_all(filters, row)]
        ordered = order_rows(matched, order) if order else matched
        shown = min(self.max_rows if limit is None else limit, self.max_rows)
        page = ordered[offset : offset + shown]
        total = len(matched) if "count=exact" in _prefer(request) else None
        if total is not None and offset > total:
            detail = f"An offset of {offset} was requested, but there are only {total} rows."
            raise PostgrestError(416, "PGRST103", "Requested range not satisfiable", detail)
        status = 206 if total is not None and len(page) < total else 200
        headers = {"Content-Range": _content_range(offset, len(page), total)}
        body = [project(row, columns, table) for row in page]
        return web.json_response(body, status=status, headers=headers)

    async def _insert(self, request: web.Request) -> web.Response:
        """Inserts into an installed table (upserts with merge-duplicates); inserting into
        `studio_board` is not modelled, and a table not installed is missing."""
        installed = self.tables.get(request.match_info["table"])
        if installed is None:
            self._check_table(request)
            raise PostgrestError(
                501, "PGRST501", "the PostgREST double does not implement inserts into studio_board"
            )
        table, unique, rows = installed
        body = await _json_body(request)
        records = body if isinstance(body, list) else [body]
        merge = "resolution=merge-duplicates" in _prefer(request)
        on_conflict = request.query.get("on_conflict")
        if merge and on_conflict is not None and on_conflict != unique:
            raise PostgrestError(
                400,
                "42P10",
                "there is no unique or exclusion constraint matching the ON CONFLICT specification",
            )
        written = [_upsert(table, unique, rows, record, merge) for record in records]
        if "return=representation" in _prefer(request):
            return web.json_response([project(row, None, table) for row in written], status=201)
        return web.Response(status=201)

    async def _patch(self, request: web.Request) -> web.Response:
        self._check_table(request)
        filters = parse_filters(request.query.items())
        columns = parse_select(request.query.get("select"))
        if not filters:
            raise PostgrestError(400, "21000", "UPDATE requires a WHERE clause")
        changes = await _json_body(request)
        if not isinstance(changes, dict):
            raise PostgrestError(400, "PGRST102", "Empty or invalid json")
        for name in changes:
            if name not in COLUMNS:
                raise PostgrestError(
                    400, "PGRST204", f"Could not find the '{name}' column of '{TABLE}' in the schema cache"
                )
        picked = [row_id for row_id, row in self.rows.items() if matches_all(filters, row)]
        self._notify(picked)
        updated = [self._write(row_id, changes) for row_id in picked if self._still_matches(row_id, filters)]
        if "return=representation" not in _prefer(request):
            return web.Response(status=204)
        return web.json_response([project(row, columns) for row in updated])

    async def _rpc(self, request: web.Request) -> web.Response:
        args = await _json_body(request)
        names = list(args) if isinstance(args, dict) else []
        function = request.match_info["function"]
        if function == BATCH_RPC_NAME and self.batch_rpc_installed and names == ["p_items"]:
            return self._merge_many(_batch_items(args["p_items"]))
        if (
            function != RPC_NAME
            or not self.rpc_installed
            or not _RPC_ARGS <= set(names) <= _RPC_ARGS | {"p_defaults"}
        ):
            raise _missing_function(function, names)
        row_id, patch, defaults = args["p_id"], args["p_patch"] or {}, args.get("p_defaults") or {}
        if not isinstance(row_id, int) or isinstance(row_id, bool):
            raise PostgrestError(400, "22P02", f'invalid input syntax for type bigint: "{row_id}"')
        if not isinstance(patch, dict) or not isinstance(defaults, dict):
            raise PostgrestError(400, "22023", "p_patch and p_defaults must be json objects")
        self._notify([row_id])
        row = self.rows.get(row_id)
        if row is None or not _object_meta(row):
            return web.json_response([])
        merged = defaults | (row.get("meta") or {}) | patch
        return web.json_response([self._write(row_id, {"meta": merged})])

    def _merge_many(self, items: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> web.Response:
        self.calls["rpc_batches"] += 1
        self._notify([row_id for row_id, _, _ in items])
        merged = [
            self._write(row_id, {"meta": defaults | (self.rows[row_id].get("meta") or {}) | patch})
            for row_id, patch, defaults in items
            if row_id in self.rows and _object_meta(self.rows[row_id])
        ]
        return web.json_response(merged)

    def _notify(self, row_ids: list[int]) -> None:
        if self.before_write is not None:
            for row_id in row_ids:
                self.before_write(row_id)

    def _still_matches(self, row_id: int, filters: list[Any]) -> bool:
        row = self.rows.get(row_id)
        return row is not None and matches_all(filters, row)

    def _write(self, row_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply `changes` and move the row to the end, as a new heap tuple would be."""
        row = self.rows.pop(row_id) | changes
        self.rows[int(row["id"])] = row
        return row
