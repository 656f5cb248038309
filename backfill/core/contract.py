"""Local check of a payload against PMOVES' `content.published.v1` contract (docs/upstreams.md §1).

Agent Zero answers an invalid payload with an unhandled 500, so nothing leaves the worker before this
passes. The rules mirror PMOVES' `content.published.v1.schema.json` (copied in `backfill_doubles/contracts/`);
the test suite checks this function against that schema with a real JSON Schema validator so the two
cannot drift.
"""

from __future__ import annotations

import re
from typing import Any

_REQUIRED = ("artifact_uri", "published_path")
_STRINGS = (
    "artifact_uri",
    "published_path",
    "title",
    "description",
    "public_url",
    "jellyfin_item_id",
    "jellyfin_public_url",
    "namespace",
    "thumbnail_url",
)
_S3 = re.compile(r"^s3://")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_problems(payload: dict[str, Any]) -> list[str]:
    problems = [
        f"{key} must be a string" for key in _STRINGS if key in payload and not isinstance(payload[key], str)
    ]
    if "tags" in payload:
        tags = payload["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problems.append("tags must be a list of strings")
    if "duration" in payload:
        duration = payload["duration"]
        if not _is_number(duration):
            problems.append("duration must be a number")
        elif duration < 0:
            problems.append("duration must be >= 0")
    if "meta" in payload and not isinstance(payload["meta"], dict):
        problems.append("meta must be an object")
    return problems


def payload_problems(payload: Any) -> list[str]:
    """Every way `payload` breaks the contract; empty when it is valid."""
    if not isinstance(payload, dict):
        return ["payload must be an object"]
    problems = [f"{key} is required" for key in _REQUIRED if key not in payload]
    problems.extend(_type_problems(payload))
    artifact = payload.get("artifact_uri")
    if isinstance(artifact, str) and not _S3.search(artifact):
        problems.append(f"artifact_uri must start with s3:// (got {artifact[:60]!r})")
    return problems
