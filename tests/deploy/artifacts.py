"""The deployment files under test, read once, and what the code says they must agree with."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from backfill import settings
from backfill.adapters.pushgateway import build_registry
from backfill.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements" / "runtime.lock"
HEALTHCHECK = REPO / "deploy" / "healthcheck"
COMPOSE = REPO / "compose.override.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "backfill-dashboard.json"
SCRAPE = REPO / "deploy" / "prometheus" / "backfill-scrape.yml"
RULES = REPO / "deploy" / "prometheus" / "backfill.rules.yml"

# What Grafana puts in place of its variables when it sends a query, for a Prometheus scraping every 1 s.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "15s", "$__range": "5m", "$pace": "0.5"}
METRIC = re.compile(r"\bbackfill_[a-z0-9_]+\b")


@dataclass(frozen=True)
class Query:
    where: str  # "panel title / refId" or "alert name"
    expr: str

    def for_prometheus(self) -> str:
        expr = self.expr
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value).replace("${" + variable[1:] + "}", value)
        assert "$" not in expr, f"{self.where}: unsubstituted variable in {expr!r}"
        return expr

    def metric_names(self) -> set[str]:
        return set(METRIC.findall(self.expr))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage, FROM first, in file order (what precedes the first FROM dropped)."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def copied_sources(stage: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(source, destination) of every COPY from the build context (none `--from` a stage), flags dropped."""
    pairs = []
    for keyword, args in stage:
        parts = args.split()
        if keyword == "COPY" and not any(part.startswith("--from") for part in parts):
            *sources, destination = [part for part in parts if not part.startswith("--")]
            pairs.extend((source.rstrip("/"), destination) for source in sources)
    return pairs


def healthcheck_command() -> list[str]:
    """The final stage's HEALTHCHECK CMD (exec form), as the image runs it."""
    (args,) = [args for keyword, args in dockerfile_stages()[-1] if keyword == "HEALTHCHECK"]
    command: list[str] = json.loads(args.split(" CMD ", 1)[1])
    return command


def on_host(command: list[str]) -> list[str]:
    """`command` with each path the Dockerfile COPYs into the image replaced by that file in this checkout."""
    files = {
        destination: str(REPO / source)
        for stage in dockerfile_stages()
        for source, destination in copied_sources(stage)
    }
    return [files.get(part, part) for part in command]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves left out."""
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def dashboard_queries() -> list[Query]:
    return [
        Query(f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def alert_queries() -> list[Query]:
    return [Query(rule["alert"], rule["expr"]) for rule in alert_rules()]


def exported_families() -> dict[str, str]:
    """Metric family name -> type, for the worker's metrics and the producer's pushed gauges."""
    registries = [
        Metrics(CollectorRegistry(), "test").registry,
        build_registry("run", {}, 0.0),
    ]
    return {family.name: family.type for r in registries for family in r.collect()}


SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
    "gauge": ("",),
}


def exported_sample_names() -> set[str]:
    """The sample names Prometheus stores for those families (`_total`, `_bucket`, `_info`, ...)."""
    return {name + suffix for name, kind in exported_families().items() for suffix in SUFFIXES[kind]}


def settings_env_names() -> set[str]:
    """Every environment variable any settings group in backfill/settings.py reads."""
    groups = [
        value
        for value in vars(settings).values()
        if isinstance(value, type)
        and issubclass(value, BaseSettings)
        and value.__module__ == settings.__name__
    ]
    names: set[str] = set()
    for group in groups:
        for field in group.model_fields.values():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.update(str(choice) for choice in alias.choices)
            elif isinstance(alias, str):
                names.add(alias)
    return names
