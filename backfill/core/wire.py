"""The one definition of what travels on JetStream: the request message, its subjects, headers.

Both `producer` and `worker` import this module; nothing else builds subjects or message bodies.
"""

from __future__ import annotations

import enum
import math
import re
from datetime import UTC, datetime

import msgspec

from backfill.core.errors import BackfillError

WIRE_VERSION = 1
MAX_ROW_ID = 2**63 - 1  # studio_board.id is a bigint

_REASON_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_ID_RE = re.compile(r"[1-9][0-9]{0,18}")  # ASCII only: "²".isdigit() is true, and int("²") raises
_LABEL_LIMIT = 200  # backfill_version and run_id: stored on the row and in headers
# PMOVES' own backfill script asks PMOVES.yt for 5 related videos at similarity 0.70 (docs/upstreams.md §8).
DEFAULT_YOUTUBE_THRESHOLD = 0.70
DEFAULT_YOUTUBE_LIMIT = 5
MAX_YOUTUBE_LIMIT = 50


class Mode(enum.StrEnum):
    """`republish` sends a new content.published.v1 event; `metadata-only` only updates the row."""

    REPUBLISH = "republish"
    METADATA_ONLY = "metadata-only"


class YoutubeLinking(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """`enqueue --link-youtube`: ask PMOVES.yt for related videos, the same way on every replica."""

    threshold: float = DEFAULT_YOUTUBE_THRESHOLD
    limit: int = DEFAULT_YOUTUBE_LIMIT


class BackfillRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """Body of `<prefix>.request.<row_id>`; small, versioned, JSON on the wire."""

    row_id: int
    backfill_version: str
    mode: Mode
    run_id: str
    enqueued_at: str
    # Absent (requests enqueued before linking existed) or null: no YouTube linking.
    youtube: YoutubeLinking | None = None
    v: int = WIRE_VERSION


class InvalidMessage(BackfillError, ValueError):
    """The bytes on a request subject are not a BackfillRequest this worker understands (still a
    ValueError, as it always was, for callers that catch that)."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(BackfillRequest)


def encode_request(request: BackfillRequest) -> bytes:
    return _encoder.encode(request)


def parse_id(text: str | None) -> int | None:
    """A row id (or any positive bigint) written in ASCII digits, else None: never raises."""
    if text is None or not _ID_RE.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ROW_ID else None


def parse_count(text: str | None) -> int | None:
    """A non-negative count (e.g. a deliveries header) in ASCII digits, else None: never raises."""
    return 0 if text == "0" else parse_id(text)


def decode_request(data: bytes, subject: str, prefix: str) -> BackfillRequest:
    """Decode and cross-check against the subject; raise InvalidMessage with a readable reason."""
    try:
        request = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"undecodable request: {exc}") from exc
    if request.v != WIRE_VERSION:
        raise InvalidMessage(f"unsupported wire version {request.v} (this worker speaks {WIRE_VERSION})")
    if not 0 < request.row_id <= MAX_ROW_ID:
        raise InvalidMessage(f"row_id must be a positive bigint, got {request.row_id}")
    for name, value in (("backfill_version", request.backfill_version), ("run_id", request.run_id)):
        if not value or len(value) > _LABEL_LIMIT or not value.isprintable():
            raise InvalidMessage(f"{name} must be 1-{_LABEL_LIMIT} printable characters, got {value[:80]!r}")
    if subject != request_subject(prefix, request.row_id):
        raise InvalidMessage(f"subject {subject[:200]!r} does not match row_id {request.row_id}")
    if request.youtube is not None and (problem := linking_problem(request.youtube)) is not None:
        raise InvalidMessage(f"youtube: {problem}")
    return request


def linking_problem(linking: YoutubeLinking) -> str | None:
    """Why these linking settings are unusable (said the same way by the CLI and the worker), or None."""
    if not math.isfinite(linking.threshold) or not 0.0 <= linking.threshold <= 1.0:
        return f"threshold must be between 0 and 1, got {linking.threshold}"
    if not 1 <= linking.limit <= MAX_YOUTUBE_LIMIT:
        return f"limit must be between 1 and {MAX_YOUTUBE_LIMIT}, got {linking.limit}"
    return None


def utc_stamp(now: datetime) -> str:
    """A timestamp as the audit markers and dead-letter headers carry it: UTC, seconds, `Z`."""
    return now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_request(
    row_id: int,
    version: str,
    mode: Mode,
    run_id: str,
    now: datetime | None = None,
    youtube: YoutubeLinking | None = None,
) -> BackfillRequest:
    stamp = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return BackfillRequest(
        row_id=row_id,
        backfill_version=version,
        mode=mode,
        run_id=run_id,
        enqueued_at=stamp,
        youtube=youtube,
    )


def request_subject(prefix: str, row_id: int) -> str:
    return f"{prefix}.request.{row_id}"


def request_filter(prefix: str) -> str:
    return f"{prefix}.request.>"


def dlq_subject(prefix: str, reason: str) -> str:
    if not _REASON_RE.match(reason):
        raise ValueError(f"dead-letter reason must be snake_case, got {reason!r}")
    return f"{prefix}.dlq.{reason}"


def dlq_filter(prefix: str) -> str:
    return f"{prefix}.dlq.>"


def dlq_reason_filter(prefix: str, reason: str | None) -> str:
    """The subject filter of one reason's dead letters, or (None) of every dead letter."""
    return dlq_subject(prefix, reason) if reason else dlq_filter(prefix)


def msg_id(row_id: int, run_id: str) -> str:
    """`Nats-Msg-Id`: dedupes publish retries inside one run; a later run (or a replay) has its own id."""
    return f"backfill:{row_id}:{run_id}"


class Header:
    """Headers the project sets; dead-letter headers are prefixed `Backfill-`."""

    MSG_ID = "Nats-Msg-Id"
    RUN_ID = "Backfill-Run-Id"
    REASON = "Backfill-Reason"
    DETAIL = "Backfill-Detail"
    ORIGINAL_SUBJECT = "Backfill-Original-Subject"
    STREAM_SEQ = "Backfill-Stream-Seq"
    DELIVERIES = "Backfill-Deliveries"
    FIRST_FAILURE = "Backfill-First-Failure"
    LAST_FAILURE = "Backfill-Last-Failure"
    WORKER = "Backfill-Worker"
    VERSION = "Backfill-Version"
    ROW_ID = "Backfill-Row-Id"
    # On a request `producer watch` replayed from the dead letters, and so on the dead letter it may
    # become again: how many times the row was replayed automatically (the cap counts these).
    AUTO_REPLAYS = "Backfill-Auto-Replays"
