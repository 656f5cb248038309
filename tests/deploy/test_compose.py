"""compose.override.yml: scalable worker, one-shot producer, PMOVES networks and variable names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

import pytest

from backfill.settings import (
    AgentZeroSettings,
    BackfillSettings,
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    StorageSettings,
    WorkerSettings,
)
from tests.deploy.artifacts import COMPOSE, REPO, load_yaml, settings_env_names

OURS = ("backfill-worker", "backfill-producer")
PMOVES_NETWORKS = {"pmoves_bus", "pmoves_api", "pmoves_monitoring"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(COMPOSE)
    return loaded


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_defines_the_worker_and_a_producer_under_the_backfill_profile(
    compose: dict[str, Any],
) -> None:
    """Both services run the one image; the producer only starts with `--profile backfill`."""
    services = compose["services"]
    assert set(OURS) <= set(services)
    worker, producer = services["backfill-worker"], services["backfill-producer"]
    assert worker["image"] == producer["image"]
    assert worker["command"] == ["worker"]
    assert "profiles" not in worker
    assert producer["profiles"] == ["backfill"]
    assert producer["entrypoint"] == ["producer"], (
        "`run --rm backfill-producer enqueue ...` must reach producer"
    )
    assert producer["restart"] == "no"


def test_worker_can_scale_it_has_no_container_name_and_no_host_ports(compose: dict[str, Any]) -> None:
    """`--scale backfill-worker=N` works only without a fixed container name or published host ports."""
    worker = compose["services"]["backfill-worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["build"]["context"] == "."


def test_worker_stop_grace_period_exceeds_its_own_shutdown_grace(compose: dict[str, Any]) -> None:
    """compose waits longer before SIGKILL than the worker gives in-flight messages after SIGTERM."""
    worker = compose["services"]["backfill-worker"]
    grace = float(worker["environment"].get("WORKER_GRACE_SECONDS", 0)) or float(
        WorkerSettings.model_fields["grace_seconds"].default
    )
    assert seconds(worker["stop_grace_period"]) > grace


def test_worker_restarts_and_is_health_checked_on_healthz(compose: dict[str, Any]) -> None:
    """A restart policy, and a healthcheck that asks /healthz on the port the worker is told to serve."""
    worker = compose["services"]["backfill-worker"]
    assert worker["restart"] in {"unless-stopped", "always", "on-failure"}
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD"
    port = worker["environment"]["WORKER_METRICS_PORT"]
    assert f":{port}/healthz" in " ".join(test)
    assert compose["services"]["backfill-producer"]["healthcheck"] == {"disable": True}


def test_services_join_only_external_networks_including_the_pmoves_ones(compose: dict[str, Any]) -> None:
    """Every network a service uses is declared external (the PMOVES stack owns them): bus, api, monitoring."""
    declared = compose["networks"]
    for name in OURS:
        for network in compose["services"][name]["networks"]:
            assert declared[network]["external"] is True, network
            assert declared[network].get("name", network).startswith("pmoves_")
    assert set(compose["services"]["backfill-worker"]["networks"]) >= PMOVES_NETWORKS


def test_every_variable_the_compose_file_sets_is_one_the_settings_read(compose: dict[str, Any]) -> None:
    """No misspelt or invented variable: each environment key is a validation alias in backfill/settings.py."""
    known = settings_env_names()
    for group in (
        NatsSettings,
        CatalogSettings,
        JellyfinSettings,
        AgentZeroSettings,
        StorageSettings,
        BackfillSettings,
        WorkerSettings,
    ):
        assert {str(f.validation_alias) for f in group.model_fields.values()} & known
    for name in OURS:
        environment = compose["services"][name]["environment"]
        assert isinstance(environment, dict), "use the mapping form so keys can be checked"
        unknown = set(environment) - known
        assert not unknown, f"{name} sets variables no settings group reads: {sorted(unknown)}"


def test_compose_passes_the_pmoves_connection_variables_through(compose: dict[str, Any]) -> None:
    """The PMOVES names are interpolated from the operator's env, defaulting to PMOVES service addresses."""
    environment = compose["services"]["backfill-worker"]["environment"]
    assert environment["NATS_URL"] == "${NATS_URL:-nats://nats:4222}"
    assert environment["SUPA_REST_URL"] == "${SUPA_REST_URL:-http://postgrest:3000}"
    assert environment["AGENT_ZERO_BASE_URL"] == "${AGENT_ZERO_BASE_URL:-http://agent-zero:8080}"
    for secret in ("SUPABASE_SERVICE_ROLE_KEY", "JELLYFIN_API_KEY", "MINIO_SECRET_KEY"):
        assert environment[secret] == "${" + secret + ":-}", "secrets come from the env, never a default"
    for required in ("JELLYFIN_URL", "JELLYFIN_PUBLIC_BASE_URL", "JELLYFIN_USER_ID", "MINIO_ENDPOINT"):
        assert environment[required].startswith("${" + required), required


def compose_command() -> list[str] | None:
    """`docker compose` when the docker CLI has the compose plugin, else a standalone compose v2."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and re.search(r"\bv?2\.\d+", probe.stdout):
            return command
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    """`docker compose config` (no engine needed) validates the file with every profile and resolves it."""
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2: neither `docker compose` (plugin) nor a v2 `docker-compose` found")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("COMPOSE_", "DOCKER_HOST"))}
    env = {k: v for k, v in env.items() if k not in settings_env_names()}  # the file's own defaults apply
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "--profile", "backfill", "config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    worker = resolved["services"]["backfill-worker"]
    assert worker["environment"]["NATS_URL"] == "nats://nats:4222"
    assert worker["environment"]["MINIO_ENDPOINT"] == "minio:9000"
    assert set(resolved["services"]) == set(OURS)
    assert all(network["external"] for network in resolved["networks"].values())
    assert "warn" not in result.stderr.lower(), result.stderr
