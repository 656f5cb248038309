"""The circuit in front of Agent Zero's publishes, as pure rules (the clock is passed in).

Agent Zero answers 503 "NATS controller not ready" while its NATS link is down, and after about two
minutes of reconnects its client gives up for good: 503 until the service is restarted. Retrying each
message through that spends its deliveries and its retry budget, and a long outage dead-letters
everything. So a worker that finds Agent Zero not ready, and its health saying it cannot publish,
**opens** the circuit: it fetches nothing new and holds the republishes it has (heartbeats keep them;
JetStream counts no delivery for that), probing Agent Zero's health after `probe_first` seconds,
doubling up to `probe_max`. A probe that finds it able to publish (or that cannot tell) moves to
**trial**: one held republish goes through; when Agent Zero answers it (anything but "not ready") the
circuit **closes** and everything held goes on; "not ready" again opens it again, the backoff going on.

    closed ──not ready, health says down (or cannot tell, `unknown_limit` times in a row)──▶ open
    open ──probe: ready or cannot tell──▶ trial ──answered──▶ closed
                                          trial ──not ready──▶ open (next probe later)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    TRIAL = "trial"


@dataclass(frozen=True)
class CircuitRules:
    probe_first: float = 2.0  # seconds from opening to the first probe of Agent Zero's health
    probe_max: float = 30.0  # the probe interval doubles up to this
    unknown_limit: int = 3  # "not ready" with a health that does not say: opens after this many in a row


@dataclass(frozen=True)
class Circuit:
    state: State = State.CLOSED
    since: float = 0.0  # when it opened (monotonic seconds); 0 while closed
    probe_at: float = 0.0  # when the next probe is due, while open
    interval: float = 0.0  # the current probe interval
    unknown: int = 0  # "not ready" answers in a row whose health did not say

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED


CLOSED = Circuit()


def opened(now: float, rules: CircuitRules, interval: float | None = None) -> Circuit:
    """Open, the next probe `interval` from now (`probe_first` unless a backoff is going on)."""
    wait = rules.probe_first if interval is None else min(interval, rules.probe_max)
    return Circuit(State.OPEN, since=now, probe_at=now + wait, interval=wait)


def on_not_ready(circuit: Circuit, ready: bool | None, now: float, rules: CircuitRules) -> Circuit:
    """A publish found Agent Zero not ready (nothing published) and its health said `ready` (True: a
    passing fault, the next publish may pass; False: it cannot publish; None: it does not say)."""
    if circuit.state is State.OPEN:
        return circuit
    if circuit.state is State.TRIAL:
        return replace(opened(now, rules, circuit.interval * 2), since=circuit.since)
    if ready is True:
        return CLOSED
    if ready is None and circuit.unknown + 1 < rules.unknown_limit:
        return replace(circuit, unknown=circuit.unknown + 1)
    return opened(now, rules)


def on_probe(circuit: Circuit, ready: bool | None, now: float, rules: CircuitRules) -> Circuit:
    """What a probe of Agent Zero's health found: able to publish (or cannot tell) lets one publish
    through; down keeps the circuit open until the next probe, the interval doubled (capped)."""
    if circuit.state is not State.OPEN:
        return circuit
    if ready is False:
        interval = min(circuit.interval * 2, rules.probe_max)
        return replace(circuit, probe_at=now + interval, interval=interval)
    return replace(circuit, state=State.TRIAL)


def on_answered(_circuit: Circuit) -> Circuit:
    """Agent Zero answered a publish with anything but "not ready": it is back."""
    return CLOSED
