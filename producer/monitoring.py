"""`producer monitoring`: fit the scrape job and alert rules into PMOVES' Prometheus as it is deployed.

PMOVES' monitoring compose mounts only the file `prometheus/prometheus.yml` into its Prometheus, which
has no `rule_files`: a rule file copied beside it never reaches the container. This command reads
PMOVES' prometheus.yml and writes, into one output directory:

    prometheus.yml                PMOVES' config with the `backfill-worker` and `backfill-pushgateway`
                                  jobs and `rule_files` added
    backfill.rules.yml            the alert rules shipped with this package
    docker-compose.backfill.yml   an override for PMOVES' monitoring project mounting both files and
                                  adding a Pushgateway

PMOVES runs no Pushgateway, and the alerts need one: `producer pause` pushes `backfill_paused` there so
a deliberate pause stays visible once the last worker is scaled away (`--pushgateway-target` scrapes
one the operator already runs instead; `--no-pushgateway` leaves it out).

The merge into prometheus.yml is `producer.prometheus_config`'s; the compose override is built here.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from backfill.core.errors import ConfigError
from producer.prometheus_config import (
    CONTAINER_DIR,
    RULE_FILE,
    asset,
    merge_config,
    pushgateway_job,
    scrape_job,
)

PUSHGATEWAY_SERVICE = "backfill-pushgateway"  # not `pushgateway`: PMOVES may add one of its own one day
PUSHGATEWAY_IMAGE = "prom/pushgateway:v1.10.0"
PUSHGATEWAY_PORT = 9091
PUSHGATEWAY_URL = f"http://{PUSHGATEWAY_SERVICE}:{PUSHGATEWAY_PORT}"
PUSHGATEWAY_VOLUME = "backfill-pushgateway-data"
PUSHGATEWAY_DIR = PurePosixPath("/pushgateway")  # the image's WORKDIR, owned by its user (nobody)
CONFIG_FILE = "prometheus.yml"
OVERRIDE_FILE = "docker-compose.backfill.yml"
MONITORING_COMPOSE = "docker-compose.monitoring.yml"
WORKER_NETWORK = "pmoves_monitoring"
NETWORK_KEY = "backfill_monitoring"
CONFIG_HEADER = (
    "# Written by `producer monitoring` (pmoves-jellyfin-backfill): PMOVES' prometheus.yml with the\n"
    f"# backfill scrape jobs and {RULE_FILE} added. Edit PMOVES' own file and run the command again.\n"
)
OVERRIDE_HEADER = (
    "# Written by `producer monitoring` (pmoves-jellyfin-backfill): an override for PMOVES' monitoring\n"
    f"# project. Use it from the directory holding {MONITORING_COMPOSE}:\n"
    f"#   docker compose -f {MONITORING_COMPOSE} -f <this file> up -d prometheus [{PUSHGATEWAY_SERVICE}]\n"
)


def on_worker_network(compose: Any) -> bool:
    """Whether the `prometheus` service of a monitoring compose file joins the `pmoves_monitoring` network."""
    if not isinstance(compose, dict):
        return False
    service = (compose.get("services") or {}).get("prometheus") or {}
    declared = compose.get("networks") or {}
    for key in service.get("networks") or []:
        network = declared.get(key) or {}
        name = network.get("name") or (key if network.get("external") else None)
        if name == WORKER_NETWORK:
            return True
    return False


def compose_source(path: Path, compose_dir: Path) -> str:
    """`path` as compose resolves a bind source: relative to the project directory (the first -f file's)."""
    relative = Path(os.path.relpath(path.resolve(), compose_dir.resolve())).as_posix()
    return relative if relative.startswith("../") else f"./{relative}"


def pushgateway_service() -> dict[str, Any]:
    """A Pushgateway on pmoves_monitoring, where the producer and Prometheus both are; what was pushed
    (a pause) survives its restart on a volume. No host port: the producer reaches it in the network."""
    return {
        "image": PUSHGATEWAY_IMAGE,
        "restart": "unless-stopped",
        "command": [f"--persistence.file={PUSHGATEWAY_DIR / 'metrics.db'}"],
        "volumes": [f"{PUSHGATEWAY_VOLUME}:{PUSHGATEWAY_DIR}"],
        "networks": [NETWORK_KEY],
    }


def compose_override(
    out: Path, compose_dir: Path, *, add_network: bool, add_pushgateway: bool
) -> dict[str, Any]:
    """Mount the merged config over PMOVES' one and the rule file beside it, both read-only; with
    `add_pushgateway`, add a Pushgateway beside Prometheus."""
    mounts = [
        {
            "type": "bind",
            "source": compose_source(out / name, compose_dir),
            "target": str(CONTAINER_DIR / name),
            "read_only": True,
        }
        for name in (CONFIG_FILE, RULE_FILE)
    ]
    service: dict[str, Any] = {"volumes": mounts}
    override: dict[str, Any] = {"services": {"prometheus": service}}
    if add_network:
        service["networks"] = [NETWORK_KEY]
    if add_pushgateway:
        override["services"][PUSHGATEWAY_SERVICE] = pushgateway_service()
        override["volumes"] = {PUSHGATEWAY_VOLUME: {}}
    if add_network or add_pushgateway:
        override["networks"] = {NETWORK_KEY: {"name": WORKER_NETWORK, "external": True}}
    return override


def commands(out: Path, compose_dir: Path, *, add_pushgateway: bool) -> dict[str, str]:
    override = compose_source(out / OVERRIDE_FILE, compose_dir)
    services = f"prometheus {PUSHGATEWAY_SERVICE}" if add_pushgateway else "prometheus"
    return {
        "start": f"docker compose -f {MONITORING_COMPOSE} -f {override} up -d {services}",
        "reload": "curl -X POST http://localhost:${PROMETHEUS_HOST_PORT:-9090}/-/reload",
    }


def render(data: dict[str, Any], header: str) -> str:
    return header + str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=4096))


def read_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc


def write_in_place(path: Path, data: bytes) -> None:
    """Overwrite without replacing the file: a single-file bind mount keeps showing the old inode."""
    with path.open("wb") as file:
        file.write(data)


def integrate(args: argparse.Namespace) -> dict[str, Any]:
    config_path: Path = args.prometheus_config
    out: Path = args.out
    compose_dir: Path = args.compose_dir or config_path.resolve().parent.parent
    if out.resolve() == config_path.resolve().parent:
        raise ConfigError(f"--out {out} is the directory of PMOVES' prometheus.yml: choose another one")
    job = scrape_job(args.target_dns, args.static_target or [], args.scrape_interval)
    add_pushgateway = not args.no_pushgateway and args.pushgateway_target is None
    gateway = (
        None
        if args.no_pushgateway
        else args.pushgateway_target or f"{PUSHGATEWAY_SERVICE}:{PUSHGATEWAY_PORT}"
    )
    jobs = [job] if gateway is None else [job, pushgateway_job(gateway, args.scrape_interval)]
    merged = merge_config(read_yaml(config_path, "PMOVES' Prometheus config"), jobs, str(config_path))
    monitoring = compose_dir / MONITORING_COMPOSE
    known = monitoring.is_file()
    add_network = known and not on_worker_network(read_yaml(monitoring, "the monitoring compose file"))
    override = compose_override(out, compose_dir, add_network=add_network, add_pushgateway=add_pushgateway)
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = {"prometheus_config": out / CONFIG_FILE, "rule_file": out / RULE_FILE}
        files["compose_override"] = out / OVERRIDE_FILE
        write_in_place(files["prometheus_config"], render(merged, CONFIG_HEADER).encode())
        write_in_place(files["rule_file"], asset(RULE_FILE))
        write_in_place(files["compose_override"], render(override, OVERRIDE_HEADER).encode())
    except OSError as exc:
        raise ConfigError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    return {
        "files": {key: str(path) for key, path in files.items()},
        "compose_dir": str(compose_dir),
        "monitoring_compose_found": known,
        "network_added": add_network,
        "scrape_job": job,
        "pushgateway": {
            "scraped": gateway,
            "added": add_pushgateway,
            "url": PUSHGATEWAY_URL if add_pushgateway else None,
        },
        "commands": commands(out, compose_dir, add_pushgateway=add_pushgateway),
    }
