"""Wall clocks a test moves by hand: Unix seconds (`Clock`), or an aware datetime (`ServerClock`, the
Jellyfin double's)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


class ServerClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now
