"""Seeded fault injection shared by the doubles.

Each double subclasses `FaultInjector`, so a test tunes faults with plain attribute sets
(`double.fail_rate = 0.3`, `double.fail_next = 2`) and reads `double.injected` afterwards. Every
`draw()` consumes exactly two numbers from a `random.Random(seed)`, so a run with the same seed and
the same sequence of requests injects the same faults, whatever the rates are set to.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections import Counter


class Fault(enum.Enum):
    """What a double should do with one request."""

    NONE = "none"
    FAIL = "fail"
    TIMEOUT = "timeout"
    HANG = "hang"


class FaultInjector:
    """Fault settings and counters; `draw()` decides the fate of one request."""

    def __init__(self, seed: int = 0) -> None:
        self.fail_rate = 0.0
        self.fail_next = 0
        self.timeout_rate = 0.0
        self.hang_rate = 0.0
        self.hang_seconds = 0.0
        self.latency = 0.0
        self.injected: Counter[str] = Counter()
        self._fault_rng = random.Random(f"faults:{seed}")

    def draw(self) -> Fault:
        """Pick the fault for the next request and count it."""
        roll, hang_roll = self._fault_rng.random(), self._fault_rng.random()
        fault = Fault.NONE
        if self.fail_next > 0:
            self.fail_next -= 1
            fault = Fault.FAIL
        elif roll < self.fail_rate:
            fault = Fault.FAIL
        elif roll < self.fail_rate + self.timeout_rate:
            fault = Fault.TIMEOUT
        elif hang_roll < self.hang_rate:
            fault = Fault.HANG
        if fault is not Fault.NONE:
            self.injected[fault.value] += 1
        return fault

    async def delay(self, fault: Fault) -> None:
        """Sleep for the configured latency, plus `hang_seconds` when the fault is a hang."""
        seconds = self.latency + (self.hang_seconds if fault is Fault.HANG else 0.0)
        if seconds > 0:
            await asyncio.sleep(seconds)
