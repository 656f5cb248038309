"""`producer enqueue`: stream candidate rows from the catalog into JetStream, one message per row.

Publishing is pipelined: many publishes in flight, every acknowledgement awaited and counted. Memory
stays flat in the number of rows (pages of at most 1000; only outstanding publishes are held).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from backfill.adapters.jetstream.bus import AckPublisher, PubResult, PubStatus
from backfill.core.catalog import is_candidate
from backfill.core.deadletter import DeadLetterIndex
from backfill.core.model import Row
from backfill.core.ports import Catalog
from backfill.core.wire import (
    Header,
    Mode,
    YoutubeLinking,
    encode_request,
    msg_id,
    new_request,
    request_subject,
)
from producer.progress import Progress

log = logging.getLogger("producer")
RETRIES = 2
STOP_GRACE = 10.0  # seconds the publishes in flight get to be acknowledged after SIGINT/SIGTERM


class StopRequest(Protocol):
    """Whether the operator asked the run to stop (the producer's SIGINT/SIGTERM handling)."""

    @property
    def requested(self) -> bool: ...

    @property
    def signal_name(self) -> str | None: ...


@dataclass
class EnqueueCounts:
    candidates: int = 0
    enqueued: int = 0
    already_pending: int = 0
    failed: int = 0
    not_candidates: int = 0
    failed_ids: list[int] = field(default_factory=list)
    unconfirmed: int = 0  # publishes still without an answer when a stop request's grace ran out
    elapsed_seconds: float = 0.0  # reading the catalog and publishing, until the last acknowledgement
    left_out: int = 0  # candidates not enqueued because they already have a dead letter
    left_out_by_reason: dict[str, int] = field(default_factory=dict)  # by the dead letter's reason

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def leave_out_dead_lettered(rows: list[Row], index: DeadLetterIndex, counts: EnqueueCounts) -> list[Row]:
    """The rows without a dead letter; the others counted by their dead letter's reason. A row already
    dead-lettered would only fail again and add a dead letter: it waits for its replay instead."""
    kept = []
    for row in rows:
        entry = index.latest(row.id)
        if entry is None:
            kept.append(row)
            continue
        counts.left_out += 1
        counts.left_out_by_reason[entry.reason] = counts.left_out_by_reason.get(entry.reason, 0) + 1
    return kept


@dataclass(frozen=True)
class Selection:
    """Which rows: explicit ids, or every candidate above `since_id` (at most `limit`)."""

    ids: Sequence[int] = ()
    since_id: int = 0
    limit: int | None = None


async def select_rows(
    catalog: Catalog, selection: Selection, counts: EnqueueCounts, dead_letters: DeadLetterIndex | None = None
) -> AsyncIterator[list[Row]]:
    """Pages of candidate rows; explicit ids that are not candidates are counted, not enqueued. With
    `dead_letters`, every candidate (not explicit ids) that has a dead letter is left out and counted."""
    if selection.ids:
        rows = sorted(await catalog.fetch_rows(selection.ids), key=lambda r: r.id)
        wanted = [r for r in rows if is_candidate(r)][: selection.limit]
        counts.not_candidates = len(selection.ids) - len([r for r in rows if is_candidate(r)])
        if wanted:
            yield wanted
        return
    async for page in catalog.stream_candidates(selection.since_id, selection.limit):
        yield page if dead_letters is None else leave_out_dead_lettered(page, dead_letters, counts)


def add_mode_option(parser: argparse.ArgumentParser) -> None:
    """`--mode`, as `enqueue` and `watch` take it."""
    parser.add_argument(
        "--mode",
        choices=[m.value for m in Mode],
        default=Mode.REPUBLISH.value,
        help="republish (new Discord embeds) or metadata-only (update rows only); default: %(default)s",
    )


class Enqueuer:
    def __init__(
        self,
        publisher: AckPublisher,
        prefix: str,
        version: str,
        mode: Mode,
        run_id: str,
        youtube: YoutubeLinking | None = None,
    ) -> None:
        """`youtube`: carried in every request (`--link-youtube`), so every replica links the same way."""
        self._publisher = publisher
        self._prefix = prefix
        self._version = version
        self._mode = mode
        self._run_id = run_id
        self._youtube = youtube
        self._outstanding: set[asyncio.Future[PubResult]] = set()

    async def _submit(self, row_id: int) -> asyncio.Future[PubResult]:
        request = new_request(row_id, self._version, self._mode, self._run_id, youtube=self._youtube)
        headers = {Header.MSG_ID: msg_id(row_id, self._run_id), Header.RUN_ID: self._run_id}
        return await self._publisher.submit(
            request_subject(self._prefix, row_id), encode_request(request), headers
        )

    def _count(self, result: PubResult, row_id: int, counts: EnqueueCounts, retry: list[int]) -> None:
        if result.status is PubStatus.STORED:
            counts.enqueued += 1
        elif result.status in (PubStatus.ALREADY_PENDING, PubStatus.DUPLICATE):
            counts.already_pending += 1
        else:
            retry.append(row_id)
            log.debug("publish failed", extra={"row_id": row_id, "error": result.error})

    async def run(
        self,
        pages: AsyncIterator[list[Row]],
        counts: EnqueueCounts,
        progress: Progress,
        stop: StopRequest | None = None,
    ) -> None:
        """Every row of `pages`, until `stop` is requested: then no further row is read, the publishes
        in flight get STOP_GRACE seconds, and what is still unanswered is counted `unconfirmed`."""
        started = time.perf_counter()
        try:
            await self._run(pages, counts, progress, stop)
        finally:
            counts.elapsed_seconds = round(time.perf_counter() - started, 3)

    async def _run(
        self,
        pages: AsyncIterator[list[Row]],
        counts: EnqueueCounts,
        progress: Progress,
        stop: StopRequest | None,
    ) -> None:
        retry: list[int] = []
        try:
            async for page in pages:
                for row in page:
                    if stop is not None and stop.requested:
                        break
                    counts.candidates += 1
                    future = await self._submit(row.id)
                    self._outstanding.add(future)
                    future.add_done_callback(self._on_done(row.id, counts, retry, progress))
                if stop is not None and stop.requested:
                    break
        finally:  # a stop leaves the catalog's page reader mid-way: close it now, not at collection
            closing = getattr(pages, "aclose", None)
            if closing is not None:
                await closing()
        stopping = stop is not None and stop.requested
        if self._outstanding:
            await asyncio.wait(set(self._outstanding), timeout=STOP_GRACE if stopping else None)
        if stopping:
            counts.unconfirmed = len(self._outstanding)
            counts.failed_ids.extend(retry)  # no retry after a stop request: reported, not lost
            counts.failed += len(retry)
            return
        await self._retry_failed(retry, counts)

    def _on_done(
        self, row_id: int, counts: EnqueueCounts, retry: list[int], progress: Progress
    ) -> Callable[[asyncio.Future[PubResult]], None]:
        def done(future: asyncio.Future[PubResult]) -> None:
            self._outstanding.discard(future)
            self._count(future.result(), row_id, counts, retry)
            progress.advance(enqueued=counts.enqueued, already_pending=counts.already_pending)

        return done

    async def _retry_failed(self, row_ids: list[int], counts: EnqueueCounts) -> None:
        """Publishes that got no acknowledgement are retried with the same Nats-Msg-Id (no duplicates)."""
        for row_id in row_ids:
            result = PubResult(PubStatus.FAILED, error="not tried")
            for _ in range(RETRIES):
                result = await (await self._submit(row_id))
                if result.status is not PubStatus.FAILED:
                    break
            if result.status is PubStatus.FAILED:
                counts.failed += 1
                counts.failed_ids.append(row_id)
                log.error("could not enqueue row", extra={"row_id": row_id, "error": result.error})
            else:
                self._count(result, row_id, counts, [])
