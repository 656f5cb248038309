"""Whatever arrives on a subject, in a body or in a header, parsing it never raises anything but the
project's own `InvalidMessage`: poison is a dead letter, never a crash (property-based)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.core.deadletter import DeadLetterRecord, dead_letter_headers, row_id_from_subject
from backfill.core.wire import (
    MAX_ROW_ID,
    InvalidMessage,
    Mode,
    decode_request,
    encode_request,
    new_request,
    parse_count,
    parse_id,
    request_subject,
)
from tests.unit.test_deadletter import FAILURE

PREFIX = "backfill"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
tokens = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(
        [
            "²",
            "\uff11\uff12",
            "٣",
            "0",
            "007",
            "+5",
            " 5",
            "5 ",
            "1e3",
            "-1",
            str(MAX_ROW_ID),
            str(MAX_ROW_ID + 1),
        ]
    ),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("42", 42),
        (str(MAX_ROW_ID), MAX_ROW_ID),
        (str(MAX_ROW_ID + 1), None),  # beyond bigint: one such id failed the batched read of ~40 rows
        ("²", None),  # "²".isdigit() is true and int("²") raises: it crashed the settle step and sweeper
        ("١٢", None),  # Arabic-Indic digits: int() accepts them, the subject does not match the id
        ("0", None),
        ("007", None),
        ("-3", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_id_takes_ascii_digits_within_bigint_only(text: str | None, expected: int | None) -> None:
    assert parse_id(text) == expected


def test_parse_count_takes_zero_too() -> None:
    assert (parse_count("0"), parse_count("3"), parse_count("three"), parse_count("³")) == (0, 3, None, None)


@given(tokens)
def test_parse_id_never_raises_and_round_trips(text: str) -> None:
    value = parse_id(text)
    assert value is None or (0 < value <= MAX_ROW_ID and str(value) == text)
    assert row_id_from_subject(f"{PREFIX}.request.{text}") == parse_id(text.rsplit(".", 1)[-1])


@settings(max_examples=300)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda row_id, version, mode, run_id, v: json.dumps(
                {
                    "row_id": row_id,
                    "backfill_version": version,
                    "mode": mode,
                    "run_id": run_id,
                    "enqueued_at": "2025-01-01T00:00:00Z",
                    "v": v,
                }
            ).encode(),
            st.one_of(st.integers(min_value=-(2**66), max_value=2**66), st.text(max_size=5), st.none()),
            st.text(max_size=210),
            st.sampled_from(["republish", "metadata-only", "other", ""]),
            st.text(max_size=210),
            st.integers(min_value=-1, max_value=3),
        ),
    ),
    token=tokens,
)
def test_decode_request_raises_only_invalid_message(body: bytes, token: str) -> None:
    subject = f"{PREFIX}.request.{token}"
    try:
        request = decode_request(body, subject, PREFIX)
    except InvalidMessage:
        return
    assert 0 < request.row_id <= MAX_ROW_ID
    assert subject == request_subject(PREFIX, request.row_id)
    assert request.backfill_version.isprintable() and request.run_id.isprintable()


@pytest.mark.parametrize(
    ("row_id", "version", "why"),
    [
        (MAX_ROW_ID + 1, "v1", "positive bigint"),
        (0, "v1", "positive bigint"),
        (5, "", "backfill_version"),
        (5, "v1\r\nInjected: header", "backfill_version"),
        (5, "x" * 201, "backfill_version"),
    ],
)
def test_requests_outside_the_contract_are_invalid(row_id: int, version: str, why: str) -> None:
    body = json.dumps(
        {
            "row_id": row_id,
            "backfill_version": version,
            "mode": "republish",
            "run_id": "r",
            "enqueued_at": "2025-01-01T00:00:00Z",
        }
    ).encode()
    with pytest.raises(InvalidMessage, match=why):
        decode_request(body, f"{PREFIX}.request.{row_id}", PREFIX)


def test_a_valid_request_still_decodes() -> None:
    request = new_request(MAX_ROW_ID, "2025-10-14", Mode.REPUBLISH, "run-1")
    assert decode_request(encode_request(request), request_subject(PREFIX, MAX_ROW_ID), PREFIX) == request


header_values = st.one_of(tokens, st.text(max_size=50))


@given(
    subject=st.text(max_size=60),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "Backfill-Row-Id",
                "Backfill-Deliveries",
                "Backfill-Reason",
                "Backfill-Detail",
                "Nats-Msg-Id",
                "X",
            ]
        ),
        header_values,
    ),
    data=st.binary(max_size=100),
    stored=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
)
def test_dead_letter_listing_reads_any_record(
    subject: str, headers: dict[str, str], data: bytes, stored: datetime | None
) -> None:
    """`producer dlq list` / `show` turn any stored message into a line, whatever its headers hold."""
    record = DeadLetterRecord(seq=3, subject=subject, headers=headers, data=data, stored_at=stored)
    summary = record.summary(NOW)
    assert summary["row_id"] is None or 0 < summary["row_id"] <= MAX_ROW_ID
    assert isinstance(summary["attempts"], int)
    json.dumps(record.full(NOW))


@given(
    subject=st.text(max_size=80),
    detail=st.text(max_size=300),
    original=st.dictionaries(st.text(max_size=10), st.text(max_size=20)),
)
def test_dead_letter_headers_are_built_for_any_message(
    subject: str, detail: str, original: dict[str, str]
) -> None:
    failure = replace(FAILURE, detail=detail, original_subject=subject, row_id=row_id_from_subject(subject))
    headers = dead_letter_headers(failure, original)
    for name in ("Backfill-Detail", "Backfill-Original-Subject"):  # nats-py reads non-ASCII back as objects
        assert headers[name].isascii() and headers[name].isprintable()
    assert headers["Nats-Msg-Id"] == "dlq:BACKFILL:1234"
