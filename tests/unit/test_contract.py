"""The local contract check agrees with PMOVES' real JSON schema on every case we can think of."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from backfill.core.contract import payload_problems

VALID: dict[str, Any] = {"artifact_uri": "s3://outputs/a.mp4", "published_path": "a.mp4"}
CASES: list[Any] = [
    VALID,
    {**VALID, "tags": ["a", "b"], "duration": 0, "meta": {}, "title": "t", "namespace": "n"},
    {**VALID, "duration": 12.5, "thumbnail_url": "https://x", "jellyfin_item_id": "a" * 32},
    {**VALID, "extra_key": {"allowed": True}},
    {"published_path": "a.mp4"},
    {"artifact_uri": "s3://x"},
    {**VALID, "artifact_uri": "https://cdn/a.mp4"},
    {**VALID, "artifact_uri": "S3://upper"},
    {**VALID, "artifact_uri": 5},
    {**VALID, "tags": "a"},
    {**VALID, "tags": ["a", 1]},
    {**VALID, "duration": -1},
    {**VALID, "duration": "12"},
    {**VALID, "duration": True},
    {**VALID, "meta": []},
    {**VALID, "title": None},
    {**VALID, "jellyfin_public_url": 3},
    [],
    "payload",
]


@pytest.fixture(scope="module")
def schema(contracts_dir: Path) -> Draft202012Validator:
    return Draft202012Validator(json.loads((contracts_dir / "content.published.v1.schema.json").read_text()))


@pytest.mark.parametrize("payload", CASES, ids=range(len(CASES)))
def test_local_check_agrees_with_the_real_schema(schema: Draft202012Validator, payload: Any) -> None:
    """Valid for one means valid for the other, for every case."""
    assert (payload_problems(payload) == []) == schema.is_valid(payload)


def test_problems_name_the_offending_field() -> None:
    """A non-s3 artifact is reported with its value, so the dead letter says what to fix."""
    problems = payload_problems({**VALID, "artifact_uri": "https://cdn/a.mp4"})
    assert problems == ["artifact_uri must start with s3:// (got 'https://cdn/a.mp4')"]


def test_the_real_sample_payload_passes(contracts_dir: Path) -> None:
    """PMOVES' own sample payload is valid under the local check."""
    sample = json.loads((contracts_dir / "content.published.v1.sample.json").read_text())
    assert payload_problems(sample) == []
