"""Dead-letter headers: everything an operator needs, no secrets, idempotent on the stream sequence."""

from __future__ import annotations

import pytest

from backfill.core.deadletter import DETAIL_LIMIT, Failure, dead_letter_headers, redact, row_id_from_subject

FAILURE = Failure(
    reason="retries_exhausted",
    detail="jellyfin: GET /Items -> 500",
    original_subject="backfill.request.42",
    stream="BACKFILL",
    stream_seq=1234,
    deliveries=10,
    first_failure="2026-01-01T00:00:00Z",
    last_failure="2026-01-01T00:10:00Z",
    worker="w-1",
    version="2025-10-14",
    row_id=42,
)


def test_headers_carry_the_failure_and_keep_original_headers() -> None:
    """Reason, detail, subject, sequence, deliveries, times, worker and version; original headers kept."""
    headers = dead_letter_headers(FAILURE, {"Nats-Msg-Id": "backfill:42:run-1", "Backfill-Run-Id": "run-1"})
    assert headers["Backfill-Reason"] == "retries_exhausted"
    assert headers["Backfill-Stream-Seq"] == "1234"
    assert headers["Backfill-Deliveries"] == "10"
    assert headers["Backfill-Original-Subject"] == "backfill.request.42"
    assert headers["Backfill-Run-Id"] == "run-1"
    assert headers["Backfill-Row-Id"] == "42"
    assert headers["Nats-Msg-Id"] == "dlq:BACKFILL:1234"  # the worker and a sweeper store it once


@pytest.mark.parametrize(
    "secret_text",
    [
        'Authorization: MediaBrowser Client="x", Token="abc123secret"',
        "GET /x?api_key=abc123secret&y=1",
        "Bearer abc123secret.more",
        "X-Amz-Signature=abc123secret",
    ],
)
def test_details_never_carry_credentials(secret_text: str) -> None:
    """Anything shaped like a key or token is masked before it is stored."""
    assert "abc123secret" not in redact(secret_text)


def test_details_are_truncated_and_single_line() -> None:
    """Headers stay small and on one line."""
    long = Failure(**{**FAILURE.__dict__, "detail": "x\n" * 5000})
    detail = dead_letter_headers(long, None)["Backfill-Detail"]
    assert len(detail) <= DETAIL_LIMIT
    assert "\n" not in detail


@pytest.mark.parametrize(
    ("subject", "row_id"), [("backfill.request.42", 42), ("a.b.request.0", None), ("x.request.abc", None)]
)
def test_row_id_comes_from_the_subject(subject: str, row_id: int | None) -> None:
    """The last subject token is the row id when it is a positive integer."""
    assert row_id_from_subject(subject) == row_id
