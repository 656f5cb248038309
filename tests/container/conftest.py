"""Container tests: the image built from the Dockerfile, run with podman (deploy/image-ci.sh).

They need root, Debian's buildah, podman and runc, and an image built by `deploy/image-ci.sh`, which then
runs them. Anywhere else they skip, saying which of those is missing; `make test` leaves them out
(marker `container`). With BACKFILL_CONTAINER_TESTS=required (CI) a skip is a failure.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from backfill_doubles.stack import EmbeddedStack, StackOptions
from tests.container.podman import Images, missing_tools, storage_configured
from tests.e2e.conftest import envelopes, schemas

__all__ = ["envelopes", "schemas"]  # the e2e suite's fixtures, used here too

REQUIRED = os.environ.get("BACKFILL_CONTAINER_TESTS") == "required"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.container)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Where CI requires the container tests, one that skips has failed: nothing proved the image."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRED and report.skipped and Path(__file__).parent in Path(item.path).parents:
        report.outcome = "failed"
        report.longrepr = f"container test skipped where BACKFILL_CONTAINER_TESTS=required: {report.longrepr}"


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return (
            "container tests need root (buildah and podman without a daemon): run `sudo deploy/image-ci.sh`"
        )
    if missing := missing_tools():
        return f"container tests need Debian's {', '.join(missing)}: `deploy/image-ci.sh` installs them"
    if not os.environ.get("BACKFILL_IMAGE") or not storage_configured():
        return "no image to test: `deploy/image-ci.sh` builds it from the Dockerfile and runs these tests"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    """The image `deploy/image-ci.sh` built (BACKFILL_IMAGE), present in the configured storage."""
    if reason := unavailable_reason():
        pytest.skip(reason)
    name = os.environ["BACKFILL_IMAGE"]
    exists = subprocess.run(["podman", "image", "exists", name], check=False, timeout=60)
    if exists.returncode != 0:
        pytest.skip(f"BACKFILL_IMAGE={name} is not in the configured container storage")
    return name


@pytest.fixture(autouse=True)
def needs_the_image(image: str) -> str:
    """Every container test: skipped (or failed, where required) before anything else starts."""
    return image


@pytest.fixture
async def images(image: str, tmp_path: Path) -> AsyncIterator[Images]:
    started = Images(image, tmp_path)
    yield started
    await started.remove_all()


@pytest.fixture
def stack(nats_url: str, contracts_dir: Path) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(StackOptions(size=120, nats_url=nats_url, contracts_dir=contracts_dir)) as embedded:
        yield embedded
