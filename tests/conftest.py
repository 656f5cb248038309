"""Shared fixtures: one real nats-server per test session, and a fresh JetStream layout per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from backfill_doubles.contracts import CONTRACTS_DIR
from tests.support.natsserver import NatsContainerServer, NatsServerProcess, docker_available, external_url

# What behaves differently as root and as a normal user, which `.ci/run` runs as both (everything else
# runs once, as root): PostgreSQL and pgbouncer, which root starts as the system user `embedded_postgres`
# on a private copy of the server; the demo and its clean-up (temporary directories, process trees); the
# files the programs write (`producer monitoring`, the old nats-server in the user's cache).
IDENTITY = (
    "tests/contract/",
    "tests/integration/test_run_log.py",
    "tests/e2e/test_demo.py",
    "tests/e2e/test_demo_cleanup.py",
    "tests/e2e/test_postgres_catalog.py",
    "tests/e2e/test_verify_discord.py",
    "tests/e2e/test_old_server.py",
    "tests/deploy/test_pmoves_prometheus.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(config.rootpath)
    for item in items:
        if not Path(item.path).is_relative_to(root):
            continue  # a test run from elsewhere (a probe suite with its own rootdir)
        where = Path(item.path).relative_to(root).as_posix()
        if any(where.startswith(path) if path.endswith("/") else where == path for path in IDENTITY):
            item.add_marker(pytest.mark.identity)


# Property-based tests: the same examples on every run (a failure reproduces), no per-example deadline
# (a loaded CI machine is not a bug).
settings.register_profile("suite", derandomize=True, deadline=None)
settings.load_profile("suite")


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """`NATS_URL` when set; else a testcontainer when Docker answers; else the nats-server binary."""
    url = external_url()
    if url:
        yield url
        return
    server: NatsContainerServer | NatsServerProcess
    server = NatsContainerServer() if docker_available() else NatsServerProcess()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def old_nats_url() -> Iterator[str]:
    """A nats-server 2.10, as PMOVES runs (no consumer pause)."""
    from backfill_doubles.natsserver import NatsServerProcess
    from tests.support.oldnats import VERSION, OldServerUnavailable, old_nats_server_binary

    try:
        binary = old_nats_server_binary()
    except OldServerUnavailable as exc:
        pytest.skip(
            f"nats-server {VERSION} unavailable ({exc}); `python -m tests.support.oldnats` fetches it"
        )
    server = NatsServerProcess(binary=binary)
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def layout_env() -> dict[str, str]:
    """Stream, consumer and subject names no other test uses, so tests never see each other's messages."""
    tag = uuid.uuid4().hex[:10]
    return {
        "BACKFILL_STREAM": f"BF_{tag}",
        "BACKFILL_DLQ_STREAM": f"BFDLQ_{tag}",
        "BACKFILL_CONSUMER": f"workers-{tag}",
        "BACKFILL_SUBJECT_PREFIX": f"t{tag}.backfill",
        "BACKFILL_PACE_BUCKET": f"PACE_{tag}",
        "BACKFILL_LEDGER_BUCKET": f"LEDGER_{tag}",
        "BACKFILL_WATCH_BUCKET": f"WATCH_{tag}",
        "BACKFILL_WATCH_LEASE_BUCKET": f"WATCHLEASE_{tag}",
    }


@pytest.fixture(scope="session")
def contracts_dir() -> Path:
    """The project's copies of the PMOVES schemas (`backfill_doubles/contracts/`)."""
    return CONTRACTS_DIR
