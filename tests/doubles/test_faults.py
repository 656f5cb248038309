"""FaultInjector: seeded, countable fault decisions shared by every double."""

from __future__ import annotations

from backfill_doubles.faults import Fault, FaultInjector


def draws(injector: FaultInjector, count: int) -> list[Fault]:
    return [injector.draw() for _ in range(count)]


def test_no_faults_by_default() -> None:
    """A fresh injector never injects anything."""
    assert set(draws(FaultInjector(), 50)) == {Fault.NONE}


def test_same_seed_same_faults() -> None:
    """Decisions depend only on the seed and the call sequence."""
    first, second = FaultInjector(seed=9), FaultInjector(seed=9)
    for injector in (first, second):
        injector.fail_rate, injector.hang_rate = 0.3, 0.3
    assert draws(first, 40) == draws(second, 40)


def test_fail_next_comes_first_and_counts_down() -> None:
    """fail_next=N fails exactly the next N draws, whatever the rates."""
    injector = FaultInjector()
    injector.fail_next = 2
    assert draws(injector, 3) == [Fault.FAIL, Fault.FAIL, Fault.NONE]
    assert injector.fail_next == 0
    assert injector.injected["fail"] == 2


def test_rates_pick_their_fault() -> None:
    """Rate 1.0 always picks that fault, and each one is counted."""
    injector = FaultInjector()
    injector.timeout_rate = 1.0
    assert draws(injector, 3) == [Fault.TIMEOUT] * 3
    injector.timeout_rate, injector.hang_rate = 0.0, 1.0
    assert draws(injector, 2) == [Fault.HANG] * 2
    assert injector.injected == {"timeout": 3, "hang": 2}


def test_changing_rates_does_not_shift_later_decisions() -> None:
    """Every draw consumes the same randomness, so toggling a rate leaves the sequence aligned."""
    steady, toggled = FaultInjector(seed=4), FaultInjector(seed=4)
    steady.fail_rate = toggled.fail_rate = 0.5
    toggled.fail_rate = 0.0
    toggled.draw()
    steady.draw()
    toggled.fail_rate = 0.5
    assert draws(steady, 20) == draws(toggled, 20)
