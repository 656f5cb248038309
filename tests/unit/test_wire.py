"""The wire message: small, versioned, cross-checked against its subject."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backfill.core.wire import (
    BackfillRequest,
    InvalidMessage,
    Mode,
    decode_request,
    dlq_subject,
    encode_request,
    msg_id,
    new_request,
    request_subject,
)

PREFIX = "backfill"


def test_round_trip_keeps_every_field() -> None:
    """Encode then decode gives the same request, with the wire version set."""
    request = new_request(
        42, "2025-10-14", Mode.METADATA_ONLY, "run-1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    decoded = decode_request(encode_request(request), request_subject(PREFIX, 42), PREFIX)
    assert decoded == request
    assert decoded.enqueued_at == "2026-01-02T03:04:05.000Z"
    assert decoded.v == 1


@pytest.mark.parametrize(
    ("data", "subject", "fragment"),
    [
        (b"\xff\x00garbage", "backfill.request.1", "undecodable"),
        (b'{"row_id": "x"}', "backfill.request.1", "undecodable"),
        (
            b'{"row_id":1,"backfill_version":"v","mode":"everything","run_id":"r","enqueued_at":"t"}',
            "backfill.request.1",
            "undecodable",
        ),
        (
            b'{"row_id":1,"backfill_version":"v","mode":"republish","run_id":"r","enqueued_at":"t","v":2}',
            "backfill.request.1",
            "unsupported wire version",
        ),
        (
            b'{"row_id":0,"backfill_version":"v","mode":"republish","run_id":"r","enqueued_at":"t"}',
            "backfill.request.0",
            "positive",
        ),
        (
            b'{"row_id":1,"backfill_version":"v","mode":"republish","run_id":"r","enqueued_at":"t"}',
            "backfill.request.2",
            "does not match",
        ),
    ],
)
def test_bad_messages_raise_invalid_message_with_a_reason(data: bytes, subject: str, fragment: str) -> None:
    """Garbage, unknown modes, future versions and subject mismatches are all named."""
    with pytest.raises(InvalidMessage, match=fragment):
        decode_request(data, subject, PREFIX)


def test_unknown_fields_are_tolerated_for_forward_compatibility() -> None:
    """A newer producer may add fields; an older worker still reads the message."""
    data = b'{"row_id":3,"backfill_version":"v","mode":"republish","run_id":"r","enqueued_at":"t","new":1}'
    assert decode_request(data, "backfill.request.3", PREFIX).row_id == 3


def test_subjects_and_msg_ids() -> None:
    """One subject per row; dead letters by reason; msg ids unique per row and run."""
    assert request_subject("a.b", 9) == "a.b.request.9"
    assert dlq_subject("a.b", "jellyfin_not_found") == "a.b.dlq.jellyfin_not_found"
    assert msg_id(9, "run-1") != msg_id(9, "run-2")
    with pytest.raises(ValueError, match="snake_case"):
        dlq_subject("a", "bad.reason")


def test_request_struct_is_small() -> None:
    """The body stays well under a few hundred bytes."""
    body = encode_request(
        BackfillRequest(1, "2025-10-14", Mode.REPUBLISH, "run-20260101T000000Z-abcdef", "t")
    )
    assert len(body) < 200
