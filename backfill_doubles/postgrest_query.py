"""The subset of PostgREST's request grammar the backfill may use, for table `studio_board` and any
other `Table` a double serves (docs/upstreams.md §3).

Filters `col=[not.]op.value` with op in eq, neq, gt, gte, lt, lte, in.(a,b), is.null|true|false, on
a column or on `meta->>key` (text; a missing key and JSON null are both SQL NULL); `meta=eq.<json>`
compares the jsonb value; `select=a,b|*`; `order=col[.asc|.desc]`; `limit`, `offset`. Comparisons
follow SQL three-valued logic: a NULL cell matches no comparison, negated or not. Anything outside
this grammar raises `PostgrestError` 400 `PGRST100`, so a client bug shows up as an error rather than
as a silently different answer.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TABLE = "studio_board"
COLUMNS = ("id", "title", "namespace", "content_url", "status", "meta", "created_at")


@dataclass(frozen=True)
class Table:
    """A table's name, its columns in order, and the SQL type of each column that is not text."""

    name: str
    columns: tuple[str, ...]
    types: Mapping[str, str]

    def type_of(self, column: str) -> str:
        return self.types.get(column, "text")


STUDIO_BOARD = Table(TABLE, COLUMNS, {"id": "bigint", "meta": "jsonb", "created_at": "timestamptz"})
_RESERVED = frozenset({"select", "order", "limit", "offset"})
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:->>([A-Za-z0-9_]+))?$")
_OPERAND = re.compile(r"^(not\.)?(eq|neq|gt|gte|lt|lte|in|is)\.(.*)$", re.S)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_IS_VALUES = {"null": None, "true": True, "false": False}


class PostgrestError(Exception):
    """An error PostgREST answers with `{code, message, details, hint}`."""

    def __init__(
        self, status: int, code: str, message: str, details: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "details": details, "hint": hint, "message": message}


def parse_error(what: str, text: str) -> PostgrestError:
    return PostgrestError(400, "PGRST100", f'"failed to parse {what} ({text})" (line 1, column 1)')


def no_column(name: str, table: Table = STUDIO_BOARD) -> PostgrestError:
    return PostgrestError(400, "42703", f"column {table.name}.{name} does not exist")


def json_equal(left: Any, right: Any) -> bool:
    """jsonb equality: keys unordered, numbers by value, booleans never equal to numbers."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(json_equal, left, right))
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    return type(left) is type(right) and left == right


def json_text(value: Any) -> str | None:
    """What `->>` yields: strings unquoted, JSON null as NULL, anything else as JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


@dataclass(frozen=True)
class Filter:
    """One `column=[not.]op.value` condition."""

    column: str
    json_key: str | None
    op: str
    operand: Any
    negate: bool
    column_type: str = "text"  # the column's SQL type in its table

    def kind(self) -> str:
        """The SQL type the operand is compared as."""
        return "text" if self.json_key is not None else self.column_type


def _convert(kind: str, text: str) -> Any:
    if kind == "bigint":
        try:
            return int(text)
        except ValueError:
            raise PostgrestError(400, "22P02", f'invalid input syntax for type bigint: "{text}"') from None
    if kind == "timestamptz":
        return _instant(text)
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise PostgrestError(400, "22P02", f'invalid input syntax for type boolean: "{text}"')
        return text.lower() == "true"
    if kind == "jsonb":
        try:
            return json.loads(text)
        except ValueError:
            raise PostgrestError(
                400, "22P02", "invalid input syntax for type json", f'Token "{text}" is invalid.'
            ) from None
    return text


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PostgrestError(
            400, "22007", f'invalid input syntax for type timestamp with time zone: "{text}"'
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _split_list(text: str, raw: str) -> list[str]:
    if not (text.startswith("(") and text.endswith(")")):
        raise parse_error("filter", raw)
    items = re.findall(r'\s*("(?:[^"\\]|\\.)*"|[^,]*)\s*(?:,|$)', text[1:-1])
    return [item[1:-1] if item.startswith('"') else item for item in items if item != ""]


def _operand(kind: str, op: str, text: str, raw: str) -> Any:
    if op == "is":
        if text.lower() not in _IS_VALUES:
            raise parse_error("filter", raw)
        return _IS_VALUES[text.lower()]
    if kind == "jsonb" and op not in ("eq", "neq"):
        raise parse_error("filter", raw)
    if op == "in":
        return tuple(_convert(kind, item) for item in _split_list(text, raw))
    return _convert(kind, text)


def parse_filter(key: str, raw: str, table: Table = STUDIO_BOARD) -> Filter:
    """Parse one filter parameter; raises `PostgrestError` for anything outside the subset."""
    key_match, op_match = _KEY.match(key), _OPERAND.match(raw)
    if key_match is None or op_match is None:
        raise parse_error("filter", f"{key}={raw}")
    column, json_key = key_match.groups()
    if column not in table.columns:
        raise no_column(column, table)
    if json_key is not None and table.type_of(column) != "jsonb":
        raise PostgrestError(400, "42883", "operator does not exist: text ->> unknown")
    negate, op, text = op_match.groups()
    shell = Filter(column, json_key, op, None, negate is not None, table.type_of(column))
    operand = _operand(shell.kind(), op, text, raw)
    return Filter(column, json_key, op, operand, shell.negate, shell.column_type)


def _cell(row: Mapping[str, Any], flt: Filter) -> Any:
    value = row.get(flt.column)
    if flt.json_key is not None:
        return json_text(value.get(flt.json_key)) if isinstance(value, dict) else None
    if flt.column_type == "timestamptz" and isinstance(value, str):
        return _instant(value)
    return value


def _compare(flt: Filter, cell: Any) -> bool:
    if flt.op == "in":
        return any(
            _compare(Filter(flt.column, flt.json_key, "eq", item, False, flt.column_type), cell)
            for item in flt.operand
        )
    if flt.kind() == "jsonb":
        equal = json_equal(cell, flt.operand)
        return equal if flt.op == "eq" else not equal
    return _COMPARE[flt.op](cell, flt.operand)


def evaluate(flt: Filter, row: Mapping[str, Any]) -> bool | None:
    """SQL truth value of `flt` on `row`: None is UNKNOWN (a NULL was compared)."""
    cell = _cell(row, flt)
    if flt.op == "is":
        result: bool | None = cell is flt.operand if flt.operand is None else cell == flt.operand
    elif cell is None:
        return None
    else:
        result = _compare(flt, cell)
    return (not result) if flt.negate else result


def matches_all(filters: Iterable[Filter], row: Mapping[str, Any]) -> bool:
    """Whether `row` satisfies every filter (UNKNOWN counts as no)."""
    return all(evaluate(flt, row) is True for flt in filters)


def parse_filters(params: Iterable[tuple[str, str]], table: Table = STUDIO_BOARD) -> list[Filter]:
    """All filters among the query parameters (reserved names are skipped)."""
    return [parse_filter(key, value, table) for key, value in params if key not in _RESERVED]


def parse_select(raw: str | None, table: Table = STUDIO_BOARD) -> tuple[str, ...] | None:
    """The selected columns, or None for `*`."""
    if raw is None or raw.strip() == "*":
        return None
    names = tuple(part.strip() for part in raw.split(","))
    for name in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise parse_error("select", raw)
        if name not in table.columns:
            raise no_column(name, table)
    return names


def parse_order(raw: str | None, table: Table = STUDIO_BOARD) -> list[tuple[str, bool]]:
    """`[(column, descending), ...]` from `order=col.asc,col2.desc`."""
    terms = []
    for term in (raw or "").split(","):
        if not term.strip():
            continue
        column, _, direction = term.strip().partition(".")
        if direction not in ("", "asc", "desc"):
            raise parse_error("order", raw or "")
        if column not in table.columns:
            raise no_column(column, table)
        if table.type_of(column) == "jsonb":
            raise parse_error("order", raw or "")
        terms.append((column, direction == "desc"))
    return terms


def parse_count(raw: str | None, name: str) -> int | None:
    """A non-negative `limit` / `offset`."""
    if raw is None:
        return None
    if not raw.isdigit():
        raise parse_error(name, raw)
    return int(raw)


def order_rows(rows: list[dict[str, Any]], order: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """Sort like PostgreSQL: NULLS LAST ascending, NULLS FIRST descending."""
    for column, descending in reversed(order):
        present = [row for row in rows if row.get(column) is not None]
        nulls = [row for row in rows if row.get(column) is None]
        present.sort(key=operator.itemgetter(column), reverse=descending)
        rows = nulls + present if descending else present + nulls
    return rows


def project(
    row: Mapping[str, Any], columns: tuple[str, ...] | None, table: Table = STUDIO_BOARD
) -> dict[str, Any]:
    """The selected columns of `row`, in table order for `*`."""
    names = table.columns if columns is None else columns
    return {name: row.get(name) for name in names}
