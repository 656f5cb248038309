"""A republish is confirmed by its envelope on NATS, not by Agent Zero's answer: both crash windows of
Agent Zero (answered then lost, published then unanswered), the ledger shared by replicas, rows whose
envelopes never show up, and its own rejections. Real NATS, the Agent Zero double over loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backfill.adapters.agent_zero import AgentZeroClient
from backfill.adapters.transport import make_client
from backfill.core.outcome import Ack, DeadLetter
from backfill.core.payload import correlation_id
from backfill.core.wire import Mode, new_request
from backfill_doubles.agent_zero import AgentZeroDouble
from tests.support.pipeline import Rig, pipeline_rig

VERSION = "2025-10-14"
DONE = Ack("done", "republished", ("jellyfin_id",))


@pytest.fixture
async def rig(nats_url: str, contracts_dir: Path) -> AsyncIterator[Rig]:
    async with pipeline_rig(nats_url, contracts_dir, timeout=1.0) as built:
        yield built


def add(rig: Rig, name: str = "Night Drive") -> int:
    item = rig.jellyfin.add_item(name, run_time_ticks=600_000_000)
    meta = {"jellyfin_item_id": item["Id"]}
    return int(
        rig.db.add_row(title=name, status="published", content_url="s3://outputs/a.mp4", meta=meta)["id"]
    )


async def handle(rig: Rig, row_id: int, attempt: int = 1) -> object:
    request = new_request(row_id, VERSION, Mode.REPUBLISH, "run-t")
    return await rig.processor.handle(request, attempt=attempt)


async def test_an_answer_whose_envelope_never_reaches_nats_is_published_again_and_kept_for_the_record(
    rig: Rig,
) -> None:
    """Agent Zero answers 200 and its envelope dies in its buffer: the row is not done on the answer;
    within the delivery the event goes out again, once; the lost id is kept as unconfirmed."""
    row_id = add(rig)
    rig.agent.skip_publish_after_answer = 1
    assert await handle(rig, row_id) == DONE
    lost, sent = rig.agent.answered
    (envelope,) = rig.agent.envelopes
    assert envelope["id"] == sent != lost
    assert rig.db.rows[row_id]["meta"]["backfill_event_id"] == sent
    assert rig.ledger.unconfirmed == {correlation_id(row_id, VERSION): [lost]}


async def test_a_publish_whose_answer_is_lost_is_confirmed_by_its_envelope_and_not_repeated(rig: Rig) -> None:
    """Agent Zero publishes, then the connection drops before its answer: the envelope on NATS is the
    row's event, and Agent Zero is not asked again."""
    row_id = add(rig)
    rig.agent.drop_after_publish = 1
    assert await handle(rig, row_id) == DONE
    (envelope,) = rig.agent.envelopes
    assert rig.agent.accepted == 1
    assert rig.db.rows[row_id]["meta"]["backfill_event_id"] == envelope["id"]


async def test_a_redelivery_finding_the_envelope_another_worker_published_publishes_nothing(
    rig: Rig, contracts_dir: Path
) -> None:
    """A worker published and died before its answer; any replica's watch recorded the envelope: the
    redelivery merges that envelope's id and never asks Agent Zero."""
    row_id = add(rig)
    cid = correlation_id(row_id, VERSION)
    async with _agent_zero_of(rig) as dead_worker_client:
        payload = {"artifact_uri": "s3://outputs/a.mp4", "published_path": "a.mp4"}
        published = await dead_worker_client.publish(payload, cid)
    await _until(lambda: rig.ledger.envelopes.get(cid) == published)
    assert await handle(rig, row_id, attempt=2) == DONE
    assert rig.agent.accepted == 1
    assert rig.db.rows[row_id]["meta"]["backfill_event_id"] == published


async def test_answers_whose_envelopes_never_show_up_dead_letter_the_row_naming_the_nats_link(
    rig: Rig,
) -> None:
    """Every answer's envelope is lost (Agent Zero publishing to another NATS than the workers'): after
    three answered ids the row is dead-lettered `upstream_rejected`, not republished forever."""
    row_id = add(rig)
    rig.agent.skip_publish_after_answer = 10
    outcome = await handle(rig, row_id)
    assert isinstance(outcome, DeadLetter) and outcome.reason == "upstream_rejected"
    assert "NATS_URL" in outcome.detail and "answered 3 publishes" in outcome.detail
    assert len(rig.ledger.unconfirmed[correlation_id(row_id, VERSION)]) == 3
    assert rig.agent.envelopes == []


async def test_a_row_agent_zero_rejects_with_its_nats_up_is_dead_lettered_and_the_next_goes_through(
    nats_url: str, contracts_dir: Path, tmp_path: Path
) -> None:
    """Agent Zero's own schema check (stricter than the backfill's copy: a title required) fails: its
    500 with NATS connected is `upstream_rejected` saying so; the connection it closes after the 500
    costs the next publish nothing."""
    strict = tmp_path / "contracts"
    shutil.copytree(contracts_dir, strict)
    schema_file = strict / "content.published.v1.schema.json"
    schema = json.loads(schema_file.read_text())
    schema["required"] = [*schema["required"], "title"]
    schema_file.write_text(json.dumps(schema))
    agent = AgentZeroDouble(nats_url, strict)
    async with pipeline_rig(nats_url, contracts_dir, timeout=1.0, agent=agent) as rig:
        untitled, titled = add(rig, name=""), add(rig, name="Titled")
        rejected = await handle(rig, untitled)
        assert isinstance(rejected, DeadLetter) and rejected.reason == "upstream_rejected"
        assert "500" in rejected.detail and "rejected the event itself" in rejected.detail
        assert await handle(rig, titled) == DONE
        assert len(agent.envelopes) == 1


class _agent_zero_of:  # noqa: N801 - reads as a context manager's name
    """A second client of the rig's Agent Zero: another worker's."""

    def __init__(self, rig: Rig) -> None:
        self._rig = rig

    async def __aenter__(self) -> AgentZeroClient:
        self._http = make_client(2.0)
        return AgentZeroClient(self._http, self._rig.agent_url)

    async def __aexit__(self, *_exc: object) -> None:
        await self._http.aclose()


async def _until(check: object, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not within the deadline"
        await asyncio.sleep(0.02)
