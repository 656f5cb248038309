"""The PostgREST grammar subset, as pure functions: jsonb equality, ->> text, three-valued logic."""

from __future__ import annotations

from typing import Any

import pytest

from backfill_doubles.postgrest_query import PostgrestError, evaluate, json_equal, json_text, parse_filter


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        (1, 1.0, True),
        (True, 1, False),
        ([1, 2], [2, 1], False),
        ({"a": None}, {}, False),
    ],
)
def test_json_equal_is_jsonb_equality(left: Any, right: Any, equal: bool) -> None:
    """Keys are unordered, numbers compare by value, booleans never equal numbers."""
    assert json_equal(left, right) is equal


@pytest.mark.parametrize(
    ("value", "text"),
    [("x", "x"), (None, None), (12.5, "12.5"), (True, "true"), ({"a": 1}, '{"a": 1}')],
)
def test_arrow_text_renders_like_postgres(value: Any, text: str | None) -> None:
    """->> yields strings unquoted, JSON null as SQL NULL, other values as JSON text."""
    assert json_text(value) == text


@pytest.mark.parametrize(
    ("key", "raw", "row", "truth"),
    [
        ("status", "eq.published", {"status": None}, None),
        ("status", "not.eq.published", {"status": None}, None),
        ("status", "not.eq.published", {"status": "draft"}, True),
        ("status", "is.null", {"status": None}, True),
        ("meta->>k", "eq.5", {"meta": {"k": 5}}, True),
        ("meta->>k", "is.null", {"meta": {}}, True),
        ("meta->>k", "not.is.null", {"meta": {"k": ""}}, True),
        ("meta->>k", "not.is.null", {"meta": {"k": None}}, False),
        ("meta->>k", "not.is.null", {"meta": None}, False),
        ("id", "in.(1,2,3)", {"id": 2}, True),
        ("created_at", "gt.2025-01-01", {"created_at": "2025-06-01T00:00:00+00:00"}, True),
    ],
)
def test_filters_follow_sql_three_valued_logic(
    key: str, raw: str, row: dict[str, Any], truth: bool | None
) -> None:
    """Comparing NULL is UNKNOWN (None), negated or not; `is` is always true or false."""
    assert evaluate(parse_filter(key, raw), row) is truth


def test_quoted_in_values_may_hold_commas() -> None:
    """in.("a,b",c) has two values."""
    assert parse_filter("title", 'in.("a,b",c)').operand == ("a,b", "c")


@pytest.mark.parametrize("raw", ["gt.{}", "in.({})"])
def test_jsonb_column_supports_only_equality(raw: str) -> None:
    """meta accepts eq/neq with a JSON value; range operators are outside the subset."""
    with pytest.raises(PostgrestError) as caught:
        parse_filter("meta", raw)
    assert caught.value.body["code"] == "PGRST100"
