"""PMOVES' prometheus.yml with the backfill's scrape jobs and rule file, for `producer monitoring`.

The merge is a pure function of PMOVES' config and the jobs: it keeps every other key as it is, refuses
a config it would have to change rather than extend, and is idempotent (its own output merges to itself).
The scrape job and rule file are package data (`producer/prometheus/`; deploy/prometheus/ links there).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

import yaml

from backfill.core.errors import ConfigError

JOB = "backfill-worker"
PUSHGATEWAY_JOB = "backfill-pushgateway"
RULE_FILE = "backfill.rules.yml"
SCRAPE_FILE = "backfill-scrape.yml"
CONTAINER_DIR = PurePosixPath("/etc/prometheus")  # where PMOVES' Prometheus reads its configuration
DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def asset(name: str) -> bytes:
    """A file shipped in the package's `prometheus/` directory."""
    return (resources.files("producer") / "prometheus" / name).read_bytes()


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration such as `15s`, `1m30s` or `500ms`; ValueError otherwise."""
    match = DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * unit for n, unit in zip(match.groups(), DURATION_UNITS, strict=True) if n)


def scrape_job(dns_name: str, static_targets: list[str], interval: str | None) -> dict[str, Any]:
    """The shipped job, discovering `dns_name` through DNS, or scraping `static_targets` when given."""
    (job,) = yaml.safe_load(asset(SCRAPE_FILE))["scrape_configs"]
    if static_targets:
        del job["dns_sd_configs"]
        job["static_configs"] = [{"targets": list(static_targets)}]
    else:
        (dns,) = job["dns_sd_configs"]
        dns["names"] = [dns_name]
    if interval is not None:
        job["scrape_interval"] = interval
        if duration_seconds(job["scrape_timeout"]) > duration_seconds(interval):
            job["scrape_timeout"] = interval
    return dict(job)


def pushgateway_job(target: str, interval: str | None) -> dict[str, Any]:
    """Scrape the Pushgateway keeping the pushed `job` label (`backfill-producer`), which the alerts and
    the dashboard's run panels select on."""
    job: dict[str, Any] = {"job_name": PUSHGATEWAY_JOB, "honor_labels": True}
    if interval is not None:
        job["scrape_interval"] = interval
    job["static_configs"] = [{"targets": [target]}]
    return job


def _entries(config: dict[str, Any], key: str, source: str) -> list[Any]:
    value = config.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{source}: `{key}` is not a list")
    return list(value)


def merge_config(config: Any, jobs: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """PMOVES' config plus `jobs` under `scrape_configs` and the rule file under `rule_files`."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: not a Prometheus configuration (a YAML mapping at the top)")
    for entry in _entries(config, "scrape_config_files", source):
        if PurePosixPath(str(entry)).name == SCRAPE_FILE:
            raise ConfigError(
                f"{source}: `scrape_config_files` lists {entry!r}, which Prometheus cannot see inside "
                "PMOVES' container; remove that entry (this command puts the job in `scrape_configs`)"
            )
    scrape_configs = _entries(config, "scrape_configs", source)
    for job in jobs:
        name = job["job_name"]
        existing = [j for j in scrape_configs if isinstance(j, dict) and j.get("job_name") == name]
        if any(j != job for j in existing):
            raise ConfigError(
                f"{source}: a scrape job named {name!r} already exists with other settings than "
                f"{json.dumps(job, sort_keys=True)}; remove it from PMOVES' prometheus.yml (or pass the "
                "same options as the run that wrote it)"
            )
        if not existing:
            scrape_configs.append(job)
    rules = _entries(config, "rule_files", source)
    elsewhere = [r for r in rules if r != RULE_FILE and PurePosixPath(str(r)).name == RULE_FILE]
    if elsewhere:
        raise ConfigError(
            f"{source}: `rule_files` already loads {elsewhere[0]!r}; remove it (the rule file is "
            f"mounted at {CONTAINER_DIR / RULE_FILE} and listed as {RULE_FILE!r})"
        )
    merged = dict(config)
    merged["rule_files"] = rules if RULE_FILE in rules else [*rules, RULE_FILE]
    merged["scrape_configs"] = scrape_configs
    return merged
