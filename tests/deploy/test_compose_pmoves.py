"""compose.override.yml beside PMOVES as PMOVES ships it: compose resolves PMOVES' real files and ours.

Each layout is a temporary directory laid out as deploy/README.md says: PMOVES' `pmoves/` directory
(its compose files, copied from tests/deploy/pmoves, and env files) with this repository's compose file
next to it in `backfill/`. `docker compose config` resolves each project the way `up` would, from its
own directory, without `-p`, `--env-file` or any variable of the caller's shell.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig
from pydantic import AliasChoices, SecretStr
from pydantic_settings import BaseSettings

from backfill.settings import (
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    StorageSettings,
    WorkerSettings,
    load_settings,
)
from backfill_doubles.natsserver import free_port, wait_for_port
from tests.deploy.artifacts import COMPOSE, REPO, load_yaml, settings_env_names
from tests.deploy.test_compose import DECIDED, Resolved, resolve
from tests.support.oldnats import VERSION, OldServerUnavailable, old_nats_server_binary
from worker.cli import GROUPS as WORKER_GROUPS

PMOVES_COPIES = Path(__file__).parent / "pmoves"
NATS_OVERRIDE = REPO / "deploy" / "pmoves-nats-volume.yml"
# The env files every PMOVES service reads, in PMOVES' order, then this project's own; later wins.
PMOVES_ENV_FILES = ("env.shared.generated", "env.shared", ".env.generated", ".env.local")
CHAIN = (*(f"pmoves/{name}" for name in PMOVES_ENV_FILES), "backfill/.env")
WORKER, PRODUCER, WATCH = "backfill-worker", "backfill-producer", "backfill-watch"
OURS = (WORKER, PRODUCER, WATCH)
FIXED_PORT = {WORKER: "WORKER_METRICS_PORT", WATCH: "BACKFILL_WATCH_METRICS_PORT"}  # what compose decides
GROUPS: list[type[BaseSettings]] = list(WORKER_GROUPS)  # every setting either program reads


def sentinel(name: str) -> str:
    return f"sentinel-{name.lower()}"


def env_text(values: Mapping[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


def dotenv_keys(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_][A-Za-z0-9_]*)=", text, flags=re.MULTILINE)}


def secret_env_names() -> set[str]:
    """Every variable name that feeds a `SecretStr` setting (keys, tokens, DSNs)."""
    names: set[str] = set()
    for group in GROUPS:
        for field in group.model_fields.values():
            if SecretStr not in getattr(field.annotation, "__args__", (field.annotation,)):
                continue
            alias = field.validation_alias
            choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
            names.update(str(choice) for choice in choices)
    return names


def pmoves_checkout(root: Path, env_files: Mapping[str, str] | None = None) -> Path:
    """PMOVES' pmoves/ directory: its compose files, its four env files, and `.env` from `.env.example`."""
    pmoves = root / "pmoves"
    (pmoves / "monitoring").mkdir(parents=True)
    for name in ("docker-compose.yml", "docker-compose.jellyfin-ai.yml"):
        shutil.copy(PMOVES_COPIES / name, pmoves / name)
    shutil.copy(
        PMOVES_COPIES / "monitoring__docker-compose.monitoring.yml",
        pmoves / "monitoring" / "docker-compose.monitoring.yml",
    )
    # PMOVES' compose file refuses to load without these two (`${...:?}`); an operator sets them.
    required = "INVIDIOUS_COMPANION_KEY=test\nINVIDIOUS_HMAC_KEY=test\n"
    (pmoves / ".env").write_text((PMOVES_COPIES / ".env.example").read_text() + "\n" + required)
    for name in PMOVES_ENV_FILES:
        (pmoves / name).write_text((env_files or {}).get(name, ""))
    return pmoves


def beside_pmoves(root: Path, pmoves_env: Mapping[str, str], own_env: str | None) -> Resolved:
    """Our project in root/backfill next to PMOVES in root/pmoves, resolved with the producer's and the
    watcher's profiles."""
    pmoves_checkout(root, pmoves_env)
    backfill = root / "backfill"
    backfill.mkdir()
    shutil.copy(COMPOSE, backfill / COMPOSE.name)
    if own_env is not None:
        (backfill / ".env").write_text(own_env)
    return resolve(backfill, [backfill / COMPOSE.name], ["--profile", "backfill", "--profile", "watch"])


@pytest.fixture(scope="module")
def pmoves_stack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Resolved]:
    """PMOVES' projects as PMOVES runs them: from pmoves/ (project `pmoves`) and pmoves/monitoring."""
    pmoves = pmoves_checkout(tmp_path_factory.mktemp("pmoves-stack"))
    main = ["nats", "agent-zero", "postgrest", "minio", "jellyfin-bridge"]
    return {
        "main": resolve(pmoves, [pmoves / "docker-compose.yml"], services=main),
        "jellyfin": resolve(pmoves, [pmoves / "docker-compose.jellyfin-ai.yml"], services=["jellyfin"]),
        "monitoring": resolve(
            pmoves / "monitoring",
            [pmoves / "monitoring" / "docker-compose.monitoring.yml"],
            services=["prometheus"],
        ),
    }


@pytest.fixture(scope="module")
def from_pmoves_files(tmp_path_factory: pytest.TempPathFactory) -> Resolved:
    """Every variable the settings read, each set once in one of PMOVES' four env files; no .env of ours."""
    files: dict[str, dict[str, str]] = {name: {} for name in PMOVES_ENV_FILES}
    for index, name in enumerate(sorted(settings_env_names())):
        files[PMOVES_ENV_FILES[index % len(PMOVES_ENV_FILES)]][name] = sentinel(name)
    texts = {name: env_text(values) for name, values in files.items()}
    return beside_pmoves(tmp_path_factory.mktemp("from-pmoves-files"), texts, None)


@pytest.fixture(scope="module")
def from_own_file(tmp_path_factory: pytest.TempPathFactory) -> Resolved:
    """Every variable the settings read, set only in our .env (with PMOVES' *_INTERNAL_URLs beside them)."""
    values = {name: sentinel(name) for name in sorted(settings_env_names())}
    values |= {
        "JELLYFIN_INTERNAL_URL": "http://internal:8096",
        "SUPA_REST_INTERNAL_URL": "http://internal:3000",
        "BACKFILL_WORKERS": "3",
    }
    return beside_pmoves(tmp_path_factory.mktemp("from-own-file"), {}, env_text(values))


LAYERED = (
    "BACKFILL_PACE_PER_MINUTE",
    "BACKFILL_PACE_BURST",
    "BACKFILL_ACK_WAIT",
    "JELLYFIN_API_KEY",
    "CATALOG_DSN",
)


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Resolved:
    """LAYERED[i] is set in the first i+1 files of CHAIN, each file giving its own name as the value.

    PMOVES' env.shared also holds host-side addresses (as env.shared.example does); our .env names
    PMOVES' in-network ones the way PMOVES' .env does (*_INTERNAL_URL).
    """
    files: dict[str, dict[str, str]] = {name: {} for name in CHAIN}
    for depth, name in enumerate(LAYERED, start=1):
        for file in CHAIN[:depth]:
            files[file][name] = file
    files["pmoves/env.shared"] |= {
        "JELLYFIN_URL": "http://localhost:8096",
        "SUPA_REST_URL": "http://localhost:3010",
    }
    files["backfill/.env"] |= {
        "JELLYFIN_INTERNAL_URL": "http://pmoves-jellyfin:8096",
        "SUPA_REST_INTERNAL_URL": "http://postgrest-internal:3000",
    }
    pmoves_env = {name.removeprefix("pmoves/"): env_text(files[name]) for name in CHAIN[:-1]}
    return beside_pmoves(tmp_path_factory.mktemp("layered"), pmoves_env, env_text(files["backfill/.env"]))


SHIPPED_SECRETS = {
    "SUPABASE_SERVICE_KEY": "service-key-from-env-shared",
    "JELLYFIN_API_KEY": "jellyfin-key-from-env-shared",
    "JELLYFIN_USER_ID": "0123456789abcdef0123456789abcdef",
}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Resolved:
    """PMOVES' own env.shared.example filled in as it asks, and our .env with the two MinIO keys."""
    text = (PMOVES_COPIES / "env.shared.example").read_text()
    for name, value in SHIPPED_SECRETS.items():
        text, count = re.subn(rf"^{name}=$", f"{name}={value}", text, flags=re.MULTILINE)
        assert count == 1, f"env.shared.example has no empty {name}= line"
    own = env_text({"MINIO_ACCESS_KEY": "minio-access", "MINIO_SECRET_KEY": "minio-secret"})
    return beside_pmoves(tmp_path_factory.mktemp("shipped"), {"env.shared": text}, own)


@pytest.fixture(scope="module")
def nats_merged(tmp_path_factory: pytest.TempPathFactory) -> Resolved:
    """PMOVES' docker-compose.yml with deploy/pmoves-nats-volume.yml merged on, from pmoves/."""
    pmoves = pmoves_checkout(tmp_path_factory.mktemp("nats-volume"))
    return resolve(pmoves, [pmoves / "docker-compose.yml", NATS_OVERRIDE], services=["nats"])


# What each of our services calls, and which PMOVES project defines it.
CALLS = {
    WORKER: [
        ("main", "nats"),
        ("main", "postgrest"),
        ("main", "agent-zero"),
        ("main", "minio"),
        ("jellyfin", "jellyfin"),
        ("monitoring", "prometheus"),  # the other way round: Prometheus scrapes every replica
    ],
    PRODUCER: [("main", "nats"), ("main", "postgrest"), ("main", "minio"), ("jellyfin", "jellyfin")],
    WATCH: [
        ("main", "nats"),
        ("main", "postgrest"),
        ("jellyfin", "jellyfin"),  # asked what changed since a time
        ("monitoring", "prometheus"),  # which scrapes it
    ],
}


@pytest.mark.parametrize("ours", OURS)
def test_each_service_shares_a_docker_network_with_every_pmoves_service_it_talks_to(
    ours: str, pmoves_stack: dict[str, Resolved], shipped: Resolved
) -> None:
    """Compared by real network name, each project resolved under its own name as it runs."""
    joined = shipped.network_names(ours)
    for project, service in CALLS[ours]:
        theirs = pmoves_stack[project].network_names(service)
        assert joined & theirs, f"{ours} shares no network with {service} (on {sorted(theirs)})"


def test_jellyfin_is_reached_on_cataclysm_net_as_jellyfin_bridge_reaches_it(
    pmoves_stack: dict[str, Resolved], shipped: Resolved
) -> None:
    """PMOVES runs Jellyfin on cataclysm-net only; our services join it, as jellyfin-bridge does."""
    assert pmoves_stack["jellyfin"].network_names("jellyfin") == {"cataclysm-net"}
    bridge = pmoves_stack["main"].network_names("jellyfin-bridge")
    assert "cataclysm-net" in bridge
    for ours in OURS:
        assert "cataclysm-net" in shipped.network_names(ours)


def test_every_network_we_join_is_one_pmoves_defines(
    pmoves_stack: dict[str, Resolved], shipped: Resolved
) -> None:
    """No invented network name: each is created (or, for cataclysm-net, declared) by PMOVES' files."""
    pmoves_names = {
        network["name"] for r in pmoves_stack.values() for network in r.model["networks"].values()
    }
    for ours in OURS:
        assert shipped.network_names(ours) <= pmoves_names


def test_the_producer_is_on_the_network_of_pmoves_prometheus_where_a_pushgateway_goes(
    pmoves_stack: dict[str, Resolved], shipped: Resolved
) -> None:
    """`--pushgateway http://pushgateway:9091` needs pmoves_monitoring, the network PMOVES' Prometheus is on."""
    assert pmoves_stack["monitoring"].network_names("prometheus") == {"pmoves_monitoring"}
    assert "pmoves_monitoring" in shipped.network_names(PRODUCER)


def test_every_setting_reaches_both_services_from_our_own_env_file(from_own_file: Resolved) -> None:
    """Set in ./.env, each variable the settings read arrives; only the worker's and the watcher's
    metrics ports are fixed."""
    for ours in OURS:
        environment = from_own_file.environment(ours)
        lost = {name for name in settings_env_names() if environment.get(name) != sentinel(name)}
        assert lost == ({FIXED_PORT[ours]} if ours in FIXED_PORT else set()), ours
    assert from_own_file.environment(WORKER)["WORKER_METRICS_PORT"] == "9108"
    assert from_own_file.environment(WATCH)["BACKFILL_WATCH_METRICS_PORT"] == "9109"


def test_the_replica_count_a_plain_up_converges_to_is_set_in_our_env_file(
    from_own_file: Resolved, shipped: Resolved
) -> None:
    """`up` without `--scale` resets a service to its configured scale: BACKFILL_WORKERS in ./.env, else 1."""
    assert from_own_file.model["services"][WORKER]["deploy"]["replicas"] == 3
    assert shipped.model["services"][WORKER]["deploy"]["replicas"] == 1


def test_from_pmoves_env_files_everything_arrives_but_the_addresses_compose_decides(
    from_pmoves_files: Resolved,
) -> None:
    """Each of PMOVES' four env files is read; only DECIDED (and the metrics ports) ignore them."""
    for ours in OURS:
        environment = from_pmoves_files.environment(ours)
        lost = {name for name in settings_env_names() if environment.get(name) != sentinel(name)}
        assert lost == (DECIDED | {FIXED_PORT[ours]} if ours in FIXED_PORT else DECIDED), ours
        assert environment["NATS_URL"] == "nats://nats:4222"
        assert environment["JELLYFIN_URL"] == "http://cataclysm-jellyfin:8096"


def test_a_secret_only_in_pmoves_env_files_is_never_blanked_by_compose(from_pmoves_files: Resolved) -> None:
    """No `environment:` entry shadows a key, token or DSN that PMOVES' env files provide."""
    secrets = secret_env_names()
    assert {"SUPABASE_SERVICE_KEY", "SUPABASE_SERVICE_ROLE_KEY", "JELLYFIN_API_KEY", "CATALOG_DSN"} <= secrets
    for ours in OURS:
        environment = from_pmoves_files.environment(ours)
        assert {name: environment.get(name) for name in secrets} == {name: sentinel(name) for name in secrets}


def test_env_files_are_read_in_pmoves_order_and_ours_wins_last(layered: Resolved) -> None:
    """env.shared.generated < env.shared < .env.generated < .env.local < our .env, for every service."""
    for ours in OURS:
        environment = layered.environment(ours)
        assert {name: environment[name] for name in LAYERED} == dict(zip(LAYERED, CHAIN, strict=True))


def test_addresses_are_the_in_network_ones_whatever_pmoves_env_files_say(
    layered: Resolved, from_own_file: Resolved
) -> None:
    """PMOVES' host-side JELLYFIN_URL / SUPA_REST_URL lose to its *_INTERNAL_URL; ours beat both."""
    environment = layered.environment(WORKER)
    assert environment["JELLYFIN_URL"] == "http://pmoves-jellyfin:8096"
    assert environment["SUPA_REST_URL"] == "http://postgrest-internal:3000"
    own = from_own_file.environment(WORKER)
    assert own["JELLYFIN_URL"] == sentinel("JELLYFIN_URL")
    assert own["SUPA_REST_URL"] == sentinel("SUPA_REST_URL")


def test_our_pmoves_env_files_are_exactly_the_ones_pmoves_services_read() -> None:
    """The list in compose.override.yml matches jellyfin-bridge's in PMOVES' file, name for name, in order."""
    theirs = load_yaml(PMOVES_COPIES / "docker-compose.yml")
    ours = load_yaml(COMPOSE)
    pmoves_list = theirs["services"]["jellyfin-bridge"]["env_file"]
    our_list = [Path(entry["path"]).name for entry in ours["services"][WORKER]["env_file"]]
    assert our_list == [*pmoves_list, ".env"]
    assert tuple(pmoves_list) == PMOVES_ENV_FILES


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in settings_env_names():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_pmoves_env_shared_example_filled_in_gives_the_worker_valid_settings(
    shipped: Resolved, clean_settings_env: pytest.MonkeyPatch
) -> None:
    """The worker's resolved environment loads: service key from SUPABASE_SERVICE_KEY, in-network addresses.

    PMOVES' env.shared.example says SUPA_REST_URL=http://localhost:3010 (host side); the worker must not
    use it. PMOVES' own .env (here .env.example) is not read.
    """
    environment = shipped.environment(WORKER)
    for name, value in environment.items():
        clean_settings_env.setenv(name, value)
    bundle = load_settings(GROUPS)
    catalog = bundle.get(CatalogSettings)
    assert catalog.service_key is not None
    assert catalog.service_key.get_secret_value() == SHIPPED_SECRETS["SUPABASE_SERVICE_KEY"]
    assert catalog.rest_url == "http://postgrest:3000"
    jellyfin = bundle.get(JellyfinSettings)
    assert (jellyfin.url, jellyfin.public_base) == ("http://cataclysm-jellyfin:8096", "http://localhost:8096")
    assert bundle.get(NatsSettings).url == "nats://nats:4222"
    assert bundle.get(StorageSettings).endpoint_url == "http://minio:9000"
    assert bundle.get(WorkerSettings).metrics_port == 9108
    only_in_pmoves_dotenv = dotenv_keys((PMOVES_COPIES / ".env.example").read_text()) - dotenv_keys(
        (PMOVES_COPIES / "env.shared.example").read_text()
    )
    assert only_in_pmoves_dotenv, "premise: PMOVES' .env.example has names env.shared.example lacks"
    assert not only_in_pmoves_dotenv & (set(environment) - DECIDED - {"MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"})


def test_without_p_every_command_reaches_the_project_named_in_the_file(
    shipped: Resolved, layered: Resolved, from_own_file: Resolved
) -> None:
    """Resolved from a directory called backfill, without -p: the project is still pmoves-backfill."""
    assert {r.model["name"] for r in (shipped, layered, from_own_file)} == {"pmoves-backfill"}


def test_nats_volume_override_adds_a_store_on_a_named_volume_and_changes_nothing_else(
    pmoves_stack: dict[str, Resolved], nats_merged: Resolved
) -> None:
    """Merged onto PMOVES' file: same image, profiles, networks, port and `-js`; plus `-sd` on a volume."""
    original = pmoves_stack["main"].model["services"]["nats"]
    merged = nats_merged.model["services"]["nats"]
    assert "volumes" not in original, "premise: PMOVES' nats keeps JetStream inside the container"
    assert {k: v for k, v in merged.items() if k not in {"command", "volumes"}} == {
        k: v for k, v in original.items() if k != "command"
    }
    assert merged["image"] == "nats:2.10-alpine"
    assert merged["command"][: len(original["command"])] == original["command"] == ["-js"]
    store = merged["command"][merged["command"].index("-sd") + 1]
    [mount] = merged["volumes"]
    assert (mount["type"], mount["target"]) == ("volume", store)
    assert nats_merged.model["volumes"][mount["source"]]["name"] == f"pmoves_{mount['source']}"
    assert not nats_merged.model["volumes"][mount["source"]].get("external")


@pytest.fixture
def nats_2_10() -> str:
    try:
        return old_nats_server_binary()
    except OldServerUnavailable as exc:
        pytest.skip(
            f"nats-server {VERSION} unavailable ({exc}); `python -m tests.support.oldnats` fetches it"
        )


def start_server(binary: str, command: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [binary, *command, "-a", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    try:
        wait_for_port("127.0.0.1", port)
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    return process


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


async def test_the_merged_nats_command_keeps_jetstream_on_the_volume_across_a_new_server(
    nats_merged: Resolved, nats_2_10: str, tmp_path: Path
) -> None:
    """nats-server 2.10 run with the merged flags (the mount point mapped to a directory) stores JetStream
    there, and a new server on the same directory (a recreated container) still has the backlog."""
    merged = nats_merged.model["services"]["nats"]
    [mount] = merged["volumes"]
    volume = tmp_path / "volume"
    command = [str(volume) if arg == mount["target"] else arg for arg in merged["command"]]
    assert str(volume) in command
    port = free_port()
    log = tmp_path / "nats.log"
    first = start_server(nats_2_10, command, port, log)
    try:
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        js = nc.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="BACKFILL", subjects=["backfill.>"]))
        await js.publish("backfill.request.1", b"row 1")
        await nc.drain()
    finally:
        stop_server(first)
    assert (volume / "jetstream").is_dir()
    second = start_server(nats_2_10, command, port, log)
    try:
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        info = await nc.jetstream(timeout=5).stream_info("BACKFILL")
        await nc.drain()
    finally:
        stop_server(second)
    assert info.state.messages == 1
