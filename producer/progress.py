"""Progress for long commands: a bar on a terminal, plain log lines otherwise (every few seconds)."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("producer")


class Progress:
    def __init__(
        self, label: str, total: int | None, stream: TextIO | None = None, every: float = 5.0
    ) -> None:
        self._label = label
        self._total = total
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._every = every if not self._tty else 0.1
        self._last = 0.0
        self._started = time.monotonic()
        self.done = 0

    def advance(self, n: int = 1, **counts: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._show(counts)

    def _rate(self) -> float:
        return self.done / max(time.monotonic() - self._started, 1e-6)

    def eta(self) -> str:
        """Time left at the rate so far, when the total is known (`h:mm:ss`), else empty."""
        rate = self._rate()
        if not self._total or self.done <= 0 or rate <= 0:
            return ""
        left = max(self._total - self.done, 0) / rate
        return f"ETA {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"

    def _show(self, counts: dict[str, int], final: bool = False) -> None:
        detail = " ".join(f"{k}={v}" for k, v in counts.items())
        if not final and (eta := self.eta()):
            detail = f"{eta} {detail}"
        if self._tty:
            if self._total:
                filled = int(30 * min(self.done / self._total, 1.0))
                bar = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self._total}"
            else:
                bar = f"{self.done}"
            self._stream.write(f"\r{self._label} {bar} {self._rate():.0f}/s {detail}\x1b[K")
            if final:
                self._stream.write("\n")
            self._stream.flush()
        else:
            total = f"/{self._total}" if self._total else ""
            log.info(f"{self._label}: {self.done}{total} ({self._rate():.0f}/s) {detail}".rstrip())

    def finish(self, **counts: int) -> None:
        self._show(counts, final=True)
