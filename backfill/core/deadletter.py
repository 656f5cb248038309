"""Dead-letter messages: the original request bytes plus headers saying what failed and where.

Building and reading the headers is pure; the worker publishes them, the producer's `dlq` commands
read them back as `DeadLetterRecord`s (built by `backfill.adapters.jetstream.deadletters`). The dead
letter's `Nats-Msg-Id` is derived from the original stream sequence, so the worker and a sweeper that
both try to move the same message store it once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backfill.core.wire import Header, parse_count, parse_id

DETAIL_LIMIT = 1000
_SECRETS = [
    re.compile(r'(Token=")[^"]*(")', re.IGNORECASE),
    re.compile(
        r"((?:api_key|apikey|token|key|signature|x-amz-signature|password)=)[^&\s\"']+", re.IGNORECASE
    ),
    re.compile(r"(Bearer )[A-Za-z0-9._~+/=-]+"),
]


def redact(text: str) -> str:
    """Strip anything that looks like a credential, then truncate."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + "***" + (m.group(2) if m.lastindex == 2 else ""), text)
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"


@dataclass(frozen=True)
class Failure:
    """Everything a dead letter records about the message it replaces."""

    reason: str
    detail: str
    original_subject: str
    stream: str
    stream_seq: int
    deliveries: int
    first_failure: str
    last_failure: str
    worker: str
    version: str
    row_id: int | None


def dead_letter_msg_id(stream: str, stream_seq: int) -> str:
    return f"dlq:{stream}:{stream_seq}"


def header_value(text: str) -> str:
    """One line of printable ASCII: a header value every NATS client reads back as a plain string
    (non-ASCII becomes `\\u00b2`-style escapes, control characters and line breaks spaces)."""
    flat = "".join(char if char.isprintable() else " " for char in text)
    return flat.encode("ascii", "backslashreplace").decode("ascii")


def dead_letter_headers(failure: Failure, original: dict[str, str] | None) -> dict[str, str]:
    """The original headers (minus its Nats-Msg-Id), plus the Backfill-* failure headers."""
    headers = {k: v for k, v in (original or {}).items() if k != Header.MSG_ID}
    headers.update(
        {
            Header.MSG_ID: dead_letter_msg_id(failure.stream, failure.stream_seq),
            Header.REASON: failure.reason,
            Header.DETAIL: redact(header_value(failure.detail)),
            Header.ORIGINAL_SUBJECT: header_value(failure.original_subject),
            Header.STREAM_SEQ: str(failure.stream_seq),
            Header.DELIVERIES: str(failure.deliveries),
            Header.FIRST_FAILURE: failure.first_failure,
            Header.LAST_FAILURE: failure.last_failure,
            Header.WORKER: header_value(failure.worker),
            Header.VERSION: header_value(failure.version),
        }
    )
    if failure.row_id is not None:
        headers[Header.ROW_ID] = str(failure.row_id)
    return headers


def row_id_from_subject(subject: str) -> int | None:
    """`<prefix>.request.<id>` -> id, or None when the last token is not a row id in ASCII digits."""
    return parse_id(subject.rsplit(".", 1)[-1])


@dataclass(frozen=True)
class DeadLetterRecord:
    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes
    stored_at: datetime | None

    @property
    def reason(self) -> str:
        return self.headers.get(Header.REASON, self.subject.rsplit(".", 1)[-1])

    @property
    def row_id(self) -> int | None:
        return parse_id(self.headers.get(Header.ROW_ID))

    def age_seconds(self, now: datetime) -> float | None:
        return (now - self.stored_at).total_seconds() if self.stored_at else None

    def summary(self, now: datetime) -> dict[str, Any]:
        age = self.age_seconds(now)
        return {
            "seq": self.seq,
            "row_id": self.row_id,
            "reason": self.reason,
            "attempts": parse_count(self.headers.get(Header.DELIVERIES)) or 0,
            "age_seconds": round(age) if age is not None else None,
            "error": self.headers.get(Header.DETAIL, ""),
        }

    def full(self, now: datetime) -> dict[str, Any]:
        return {
            **self.summary(now),
            "subject": self.subject,
            "headers": self.headers,
            "body": self.data.decode("utf-8", errors="replace"),
        }

    @property
    def auto_replays(self) -> int:
        """How many times `producer watch` replayed this row on its own before it landed here again."""
        return parse_count(self.headers.get(Header.AUTO_REPLAYS)) or 0


@dataclass(frozen=True)
class Entry:
    """What a pass needs of one dead letter (read from its headers alone): which row, why, since when."""

    seq: int
    row_id: int | None
    reason: str
    stored_at: float | None  # Unix time the dead-letter stream stored it
    auto_replays: int = 0

    @classmethod
    def of(cls, record: DeadLetterRecord) -> Entry:
        stored = record.stored_at.timestamp() if record.stored_at is not None else None
        return cls(record.seq, record.row_id, record.reason, stored, record.auto_replays)


class DeadLetterIndex:
    """The dead letters read so far, by sequence, and the rows they hold: kept up to date by reading
    only what was added since `last_seq` (backfill.adapters.jetstream.deadletters.refresh_index).

    Sequences only grow, so entries are kept in the order they were read, oldest first."""

    def __init__(self) -> None:
        self._by_seq: dict[int, Entry] = {}
        self._rows: dict[int, list[int]] = {}  # row id -> its dead letters' sequences, ascending
        self.last_seq = 0  # the highest sequence read (its dead letter may be gone since)

    def __len__(self) -> int:
        return len(self._by_seq)

    def entries(self) -> list[Entry]:
        return list(self._by_seq.values())

    def add(self, entry: Entry) -> None:
        self._by_seq[entry.seq] = entry
        self.last_seq = max(self.last_seq, entry.seq)
        if entry.row_id is not None:
            self._rows.setdefault(entry.row_id, []).append(entry.seq)

    def discard(self, seq: int) -> None:
        entry = self._by_seq.pop(seq, None)
        if entry is None or entry.row_id is None:
            return
        seqs = self._rows[entry.row_id]
        seqs.remove(seq)
        if not seqs:
            del self._rows[entry.row_id]

    def drop_below(self, first_seq: int) -> None:
        """Forget what the stream no longer holds below its first sequence (aged out, purged)."""
        while self._by_seq and (oldest := next(iter(self._by_seq))) < first_seq:
            self.discard(oldest)

    def clear(self) -> None:
        self._by_seq.clear()
        self._rows.clear()
        self.last_seq = 0

    def count_through(self, seq: int) -> int:
        """How many known dead letters have a sequence at most `seq`."""
        above = 0
        for known in reversed(self._by_seq):
            if known <= seq:
                break
            above += 1
        return len(self._by_seq) - above

    def latest(self, row_id: int) -> Entry | None:
        """The row's most recent dead letter, or None when it has none."""
        seqs = self._rows.get(row_id)
        return self._by_seq[seqs[-1]] if seqs else None

    def latest_per_row(self) -> list[Entry]:
        """Each row's most recent dead letter, and every dead letter that names no row."""
        rows = [self._by_seq[seqs[-1]] for seqs in self._rows.values()]
        return rows + [entry for entry in self._by_seq.values() if entry.row_id is None]
