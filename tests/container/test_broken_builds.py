"""What the container tests and the build catch: an image broken on purpose, three ways.

Each builds from a copy of the build context (what .dockerignore lets in) with one thing broken: a
package's COPY dropped from the Dockerfile, a hash in the lock that is not the wheel's, a dependency
missing from the lock.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.container.podman import Done, Images, podman
from tests.container.test_image_runs import runtime_problems
from tests.deploy.artifacts import REPO


def build_context(into: Path) -> Path:
    """The files .dockerignore lets into the build (its `!path` lines), and the Dockerfile."""
    allowed = [line[1:] for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for relative in [*allowed, "Dockerfile", ".dockerignore"]:
        source, target = REPO / relative.rstrip("/"), into / relative.rstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return into


async def build(context: Path, tag: str) -> Done:
    """`buildah bud` as deploy/image-ci.sh runs it, on the same base."""
    started = asyncio.get_running_loop().time()
    proc = await asyncio.create_subprocess_exec(
        *(
            "buildah",
            "bud",
            "--format",
            "docker",
            "--pull=never",
            "--isolation",
            "chroot",
            "--network",
            "host",
        ),
        *("--layers", "--build-arg", f"PYTHON_IMAGE={os.environ['BACKFILL_BASE_IMAGE']}", "--tag", tag),
        str(context),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    return Done(proc.returncode or 0, out.decode(), "", asyncio.get_running_loop().time() - started)


@pytest.fixture
async def tag() -> AsyncIterator[str]:
    name = f"localhost/backfill-broken-{uuid.uuid4().hex[:8]}:test"
    yield name
    await podman("rmi", "--force", name, check=False)


async def test_an_image_missing_a_package_builds_but_fails_the_runtime_checks(
    tmp_path: Path, tag: str
) -> None:
    """The Dockerfile without `COPY producer`: the build goes through, the image does not."""
    context = build_context(tmp_path / "context")
    dockerfile = context / "Dockerfile"
    text = dockerfile.read_text()
    assert "COPY producer ./producer\n" in text
    dockerfile.write_text(text.replace("COPY producer ./producer\n", ""))
    built = await build(context, tag)
    assert built.code == 0, built.stdout[-3000:]
    problems = await runtime_problems(Images(tag, tmp_path))
    assert any(problem.startswith("producer --version") for problem in problems), problems


def lock_without(lock: str, name: str) -> str:
    """The lock with `name`'s requirement and its hash lines taken out."""
    return re.sub(rf"(?m)^{re.escape(name)}==[^\n]*\n(?:[ \t]+--hash=[^\n]*\n)*", "", lock)


@pytest.mark.parametrize(
    ("broken", "refusal"),
    [
        ("a hash that is not the wheel's", "DO NOT MATCH THE HASHES"),
        ("a dependency missing", "aiohttp 3.14.5 requires yarl, which is not installed"),
    ],
)
async def test_a_broken_lock_fails_the_build(tmp_path: Path, tag: str, broken: str, refusal: str) -> None:
    """--require-hashes refuses a wheel whose hash the lock lacks; `pip check` a closure with a hole."""
    context = build_context(tmp_path / "context")
    lock = context / "requirements" / "runtime.lock"
    text = lock.read_text()
    if broken.startswith("a hash"):
        broken_text = re.sub(
            r"(?m)^(yarl==[^\n]*\n)((?:[ \t]+--hash=sha256:[0-9a-f]{64}[^\n]*\n)+)",
            lambda m: m[1] + re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, m[2]),
            text,
        )
    else:
        broken_text = lock_without(text, "yarl")
    assert broken_text != text
    lock.write_text(broken_text)
    built = await build(context, tag)
    assert built.code != 0
    assert refusal in built.stdout, built.stdout[-3000:]
