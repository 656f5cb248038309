"""A republish whose own connection to NATS dropped while it waited for the envelope takes Agent Zero's
answer, instead of publishing again: not seeing the envelope proved nothing (a node of the cluster lost
while the envelope went out through another: the three-node leader-kill test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backfill.core.errors import UpstreamNotReady, UpstreamRejected
from backfill.core.ledger import LocalLedger
from backfill.core.pace import NoPace
from backfill.republish import ConfirmRules, Held, Republisher


class Agent:
    """Agent Zero answering every publish with a new id (its envelopes never seen here)."""

    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, payload: dict[str, Any], correlation_id: str, source: str = "backfill") -> str:
        self.published.append(correlation_id)
        return f"env-{len(self.published)}"


class Gate:
    async def admit(self) -> float:
        return 0.0

    async def not_ready(self, error: UpstreamNotReady) -> bool:
        return False

    def answered(self) -> None:
        return None

    def abandoned(self) -> None:
        return None


class Unseen:
    """An expectation whose envelope never arrives; `blind` says whether its connection dropped."""

    def __init__(self, blind: bool) -> None:
        self._blind = blind

    def arrived(self) -> str | None:
        return None

    def blind(self) -> bool:
        return self._blind

    async def wait(self, within: float) -> str | None:
        await asyncio.sleep(0)
        return None

    def __enter__(self) -> Unseen:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


class Watch:
    def __init__(self, blind: bool) -> None:
        self._blind = blind

    def expect(self, correlation_id: str) -> Unseen:
        return Unseen(self._blind)


def republisher(agent: Agent, ledger: LocalLedger, blind: bool) -> Republisher:
    return Republisher(agent, Watch(blind), ledger, Gate(), NoPace(), ConfirmRules(envelope_wait=0.01))


async def test_a_blind_wait_takes_the_answer_publishes_once_and_records_it() -> None:
    agent, ledger = Agent(), LocalLedger()
    event = await republisher(agent, ledger, blind=True).publish({}, "cid", Held(NoPace().turn()))
    assert event == "env-1"
    assert agent.published == ["cid"], "published once: a second post could send a second envelope"
    assert ledger.envelopes == {"cid": "env-1"}, "recorded for the other replicas"


async def test_a_wait_that_saw_everything_and_nothing_publishes_again() -> None:
    """The connection was up all along: no envelope means none went out, so the row is published again,
    each answered id kept, until the row is given up as Agent Zero not on the workers' NATS."""
    agent, ledger = Agent(), LocalLedger()
    with pytest.raises(UpstreamRejected, match="none of their envelopes reached"):
        await republisher(agent, ledger, blind=False).publish({}, "cid", Held(NoPace().turn()))
    assert agent.published == ["cid"] * ConfirmRules().unconfirmed_limit
    assert ledger.envelopes == {}
