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
from backfill.metrics import Metrics
from producer.pushgateway import build_registry

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
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
