"""The circuit in front of Agent Zero: when it opens, how its probes back off, when it closes."""

from __future__ import annotations

import pytest

from backfill.core.circuit import CLOSED, CircuitRules, State, on_answered, on_not_ready, on_probe, opened

RULES = CircuitRules(probe_first=2.0, probe_max=30.0, unknown_limit=3)


@pytest.mark.parametrize(
    ("ready", "state"),
    [(False, State.OPEN), (True, State.CLOSED), (None, State.CLOSED)],
    ids=["health-down-opens", "health-up-is-a-passing-fault", "health-silent-counts"],
)
def test_not_ready_opens_only_when_the_health_says_it_cannot_publish(
    ready: bool | None, state: State
) -> None:
    assert on_not_ready(CLOSED, ready, 100.0, RULES).state is state


def test_a_health_that_never_says_opens_after_the_limit_in_a_row() -> None:
    circuit = CLOSED
    for _ in range(RULES.unknown_limit - 1):
        circuit = on_not_ready(circuit, None, 100.0, RULES)
        assert circuit.state is State.CLOSED
    assert on_not_ready(circuit, None, 100.0, RULES).state is State.OPEN
    assert (
        on_not_ready(on_not_ready(CLOSED, None, 1.0, RULES), True, 2.0, RULES) == CLOSED
    )  # the count resets


def test_the_first_probe_is_due_after_probe_first_seconds() -> None:
    circuit = on_not_ready(CLOSED, False, 100.0, RULES)
    assert (circuit.since, circuit.probe_at, circuit.interval) == (100.0, 102.0, 2.0)


def test_probes_finding_it_down_back_off_doubling_to_the_cap() -> None:
    circuit, now, intervals = opened(0.0, RULES), 0.0, []
    for _ in range(6):
        now = circuit.probe_at
        circuit = on_probe(circuit, False, now, RULES)
        intervals.append(circuit.interval)
    assert intervals == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert circuit.state is State.OPEN and circuit.since == 0.0


@pytest.mark.parametrize("ready", [True, None], ids=["ready", "cannot-tell"])
def test_a_probe_finding_it_ready_or_silent_lets_one_publish_try(ready: bool | None) -> None:
    assert on_probe(opened(0.0, RULES), ready, 2.0, RULES).state is State.TRIAL


def test_a_trial_answered_closes_and_a_trial_not_ready_reopens_with_a_longer_wait() -> None:
    trial = on_probe(on_probe(opened(0.0, RULES), False, 2.0, RULES), True, 6.0, RULES)
    assert trial.state is State.TRIAL and trial.interval == 4.0
    assert on_answered(trial) == CLOSED
    reopened = on_not_ready(trial, None, 7.0, RULES)
    assert (reopened.state, reopened.interval, reopened.probe_at, reopened.since) == (
        State.OPEN,
        8.0,
        15.0,
        0.0,
    )


def test_more_not_ready_answers_while_open_change_nothing() -> None:
    circuit = opened(0.0, RULES)
    assert on_not_ready(circuit, False, 1.0, RULES) == circuit
    assert on_probe(CLOSED, False, 1.0, RULES) == CLOSED
