"""The project's copies of the PMOVES schemas: complete, valid, and (when a PMOVES contracts folder lies
beside the repository) identical to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from backfill_doubles.contracts import CONTRACTS_DIR

SCHEMAS = [
    "content.published.v1.schema.json",
    "envelope.schema.json",
    "content.publish.failed.v1.schema.json",
]
SAMPLE = "content.published.v1.sample.json"
# An optional cross-check: the developers' checkout keeps PMOVES' contract files beside the repository.
# A user's clone has no such folder and this one test skips; nothing else looks outside the repository.
BESIDE = Path(__file__).resolve().parents[3] / "shared" / "contracts"


@pytest.mark.parametrize("name", SCHEMAS)
def test_each_copy_is_a_valid_json_schema(name: str) -> None:
    Draft202012Validator.check_schema(json.loads((CONTRACTS_DIR / name).read_text()))


def test_the_readme_names_every_copy_its_source_commit_and_the_mit_notice() -> None:
    readme = (CONTRACTS_DIR / "README.md").read_text()
    copies = sorted(p.name for p in CONTRACTS_DIR.glob("*.json"))
    assert copies == sorted([*SCHEMAS, SAMPLE])
    for name in copies:
        assert re.search(rf"`{re.escape(name)}` \| `pmoves/contracts/\S+\.json`", readme), name
    assert "09f0ad73" in readme
    assert "MIT License" in readme
    assert "Cataclysm Studios Inc." in readme


def test_the_copies_are_installed_with_the_package() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]["backfill_doubles.contracts"]
    assert "*.json" in data


@pytest.mark.skipif(not BESIDE.is_dir(), reason="no PMOVES contracts folder beside the repository")
@pytest.mark.parametrize("name", [*SCHEMAS, SAMPLE])
def test_each_copy_matches_the_pmoves_file_beside_the_repository(name: str) -> None:
    assert (CONTRACTS_DIR / name).read_bytes() == (BESIDE / name).read_bytes(), (
        f"{name} differs from PMOVES' copy: refresh backfill_doubles/contracts/ and its README's commit"
    )
