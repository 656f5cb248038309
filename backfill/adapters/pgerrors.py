"""PostgreSQL's errors as the project's: which are worth another try at once, which only later, which
never (asyncpg's exceptions and SQLSTATEs; used by `backfill.adapters.pgcatalog`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from backfill.adapters.transport import retry_pause
from backfill.core.errors import UpstreamError, UpstreamRejected, UpstreamUnavailable

SERVICE = "catalog"
T = TypeVar("T")

# SQLSTATE classes a retry can outlive: connection exception, transaction rollback (serialization
# failure, deadlock), insufficient resources (too many connections), operator intervention (admin
# shutdown, cannot connect now, statement timeout), system error (I/O).
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
# Of those, what another try a moment later within the delivery can outlive: the connection (08), the
# transaction's rollback (40001 serialization failure, 40P01 deadlock), too many connections (53), a
# server shutting down or starting (57P01-57P03). Not a statement timeout (57014): it took its time.
_AGAIN_CLASSES = frozenset({"08", "40", "53"})
_AGAIN_STATES = frozenset({"57P01", "57P02", "57P03"})
RETRY_ATTEMPTS = 3


def catalog_error(exc: BaseException) -> UpstreamError:
    """Classify a driver error: retryable when the server or the link may recover, else a rejection."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(exc.sqlstate or "")
        detail = f"{state} {type(exc).__name__}: {exc}"
        if state[:2] in _TRANSIENT_CLASSES:
            return UpstreamUnavailable(SERVICE, detail)
        return UpstreamRejected(SERVICE, detail)
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
        return UpstreamRejected(SERVICE, detail)
    return UpstreamUnavailable(SERVICE, detail)


# What a pool call can raise besides a PostgresError: a closed or refused connection, a timeout.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def worth_another_try(exc: BaseException) -> bool:
    """Whether a statement that failed with `exc` is tried again at once, within the delivery. A
    transaction whose connection died reports that as "cannot call Transaction.__aexit__()": what it
    was handling decides."""
    if isinstance(exc, TimeoutError):
        return False
    if isinstance(exc, asyncpg.PostgresError):
        state = str(exc.sqlstate or "")
        return state[:2] in _AGAIN_CLASSES or state in _AGAIN_STATES
    if isinstance(exc, OSError):  # refused, reset
        return True
    inner = exc.__context__
    return isinstance(exc, asyncpg.InterfaceError) and inner is not None and worth_another_try(inner)


async def again_on_transient(call: Callable[[], Awaitable[T]], failed: Callable[[], None]) -> T:
    """`call()`, tried again after a transient driver error (`worth_another_try`), RETRY_ATTEMPTS in
    all with a jittered backoff; `failed` is told of every failed try. The last error is raised mapped."""
    attempt = 1
    while True:
        try:
            return await call()
        except DRIVER_ERRORS as exc:
            failed()
            if attempt == RETRY_ATTEMPTS or not worth_another_try(exc):
                raise catalog_error(exc) from exc
        await asyncio.sleep(retry_pause(attempt))
        attempt += 1
