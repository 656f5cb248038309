"""The project's one error tree.

Adapters translate their library's exceptions (httpx, nats) into these at the boundary, so nothing
above an adapter catches a third-party exception. Each class says whether retrying can help.

    BackfillError                      root; never raised itself
    ├── ConfigError                    bad or missing settings; the program stops (exit 2)
    ├── StreamConfigConflict           an existing stream/consumer cannot take our config
    ├── NotFound                       what a command reads does not exist (exit 4)
    ├── UpstreamError                  an HTTP upstream failed          (has .service, .status)
    │   ├── UpstreamUnavailable        timeout, connection error, 5xx, 429/503: retryable
    │   │   ├── UpstreamNotReady       it did nothing: connection refused, or "not ready" (Agent
    │   │   │                          Zero's 503): repeating is safe; persistent, it is an outage
    │   │   └── OutcomeUnknown         the request may have taken effect (timeout, connection lost
    │   │                              before the answer, a gateway's 502/504): confirm or re-read
    │   │                              before repeating anything that is not idempotent
    │   └── UpstreamRejected           a 4xx (or an answer) retrying cannot fix: not retryable
    ├── CatalogConflict                optimistic write lost its race too often: retryable
    ├── BusError                       JetStream publish/ack failed: retryable
    └── InvalidMessage                 (core.wire; also a ValueError) a request's bytes are not a
                                       BackfillRequest: a dead letter, never retried
"""

from __future__ import annotations

from enum import IntEnum


class BackfillError(Exception):
    """Root of every error this project raises on purpose."""

    retryable: bool = False


class ConfigError(BackfillError):
    """Settings are missing or malformed; the message lists every problem."""


class StreamConfigConflict(BackfillError):
    """An existing stream or consumer differs in a way that cannot be updated in place."""


class NotFound(BackfillError):
    """What a command reads is not there: a stream, the consumer, a dead letter, a table."""


class UpstreamError(BackfillError):
    """An HTTP upstream (jellyfin, agent_zero, catalog, storage) did not give a usable answer."""

    def __init__(
        self,
        service: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """Transient: timeout, connection refused, 5xx, 429 or 503. Retry later."""

    retryable = True


class UpstreamNotReady(UpstreamUnavailable):
    """The upstream did nothing: the connection was refused, or it answered that it cannot serve yet
    (Agent Zero's 503 "NATS controller not ready", checked before it publishes). Safe to repeat."""


class OutcomeUnknown(UpstreamUnavailable):
    """No usable answer to a request that may have taken effect: a timeout, the connection lost before
    the answer, a gateway's 502/504. Repeat only what is idempotent; confirm or re-read the rest."""


class UpstreamRejected(UpstreamError):
    """A 4xx that retrying will not fix (bad auth, invalid request)."""


class CatalogConflict(BackfillError):
    """The row kept changing under an optimistic write; retry the message later."""

    retryable = True


class BusError(BackfillError):
    """JetStream did not acknowledge a publish or an API call; retry later."""

    retryable = True


class Exit(IntEnum):
    """Exit codes of both programs (docs/configuration.md, "Exit codes and conventions")."""

    OK = 0
    FAILED = 1  # the command ran, and something in it failed (or, for `layout`, differs)
    CONFIG = 2  # usage or configuration error: nothing was done
    UNAVAILABLE = 3  # NATS, JetStream or an upstream refused or was out of reach
    NOT_FOUND = 4  # what the command reads does not exist (stream, consumer, dead letter, table)
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


def exit_code(exc: BackfillError) -> Exit:
    if isinstance(exc, ConfigError):
        return Exit.CONFIG
    if isinstance(exc, NotFound):
        return Exit.NOT_FOUND
    return Exit.UNAVAILABLE
