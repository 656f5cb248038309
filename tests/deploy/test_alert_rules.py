"""The alert rules and scrape job, checked by promtool: syntax, and which alerts fire in which situation."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.artifacts import (
    REPO,
    RULES,
    SCRAPE,
    Query,
    alert_queries,
    alert_rules,
    exported_sample_names,
    load_yaml,
)

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`; .ci/run installs it)"
)
ALERTS = {
    "BackfillDeadLettersGrowing",
    "BackfillBacklogNotShrinking",
    "BackfillUpstreamErrorRatioHigh",
    "BackfillNoWorkerUp",
    "BackfillWatchStalled",
    "BackfillAgentZeroUnavailable",
}
UP = 'up{job="backfill-worker", instance="10.0.0.5:9108"}'


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, check=False)


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    rendered = ", ".join(f'{k}="{v}"' for k, v in {"instance": "10.0.0.5:9108", **labels}.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


def requests(service: str, status_class: str, values: str) -> dict[str, str]:
    return series("backfill_upstream_requests_total", values, service=service, status_class=status_class)


HEALTHY = [
    {"series": UP, "values": "1x60"},
    series("backfill_consumer_pending_messages", "1000-15x60"),
    series("backfill_consumer_ack_pending_messages", "16x60"),
    series("backfill_dlq_messages", "5x60"),
    requests("jellyfin", "2xx", "0+100x60"),
    requests("jellyfin", "4xx", "0+30x60"),
    requests("agent_zero", "2xx", "0+30x60"),
]


WATCHER = "10.0.0.9:9109"
STALLED = [{"alertname": "BackfillWatchStalled", "severity": "warning"}]


def watch_series(name: str, values: str, instance: str = WATCHER) -> dict[str, str]:
    return series(name, values, instance=instance, job="backfill-watch")


def passes(every_minutes: int, until: int, total: int = 60) -> str:
    """The last pass's Unix time, minute by minute: a pass every `every_minutes` until minute `until`."""
    last = 0
    values = []
    for minute in range(total + 1):
        if minute <= until and minute % every_minutes == 0:
            last = minute * 60
        values.append(str(last))
    return " ".join(values)


def watcher(last_pass: str, up: str = "1x60", instance: str = WATCHER) -> list[dict[str, str]]:
    """One watcher target: its last pass, its interval (5 minutes), and whether Prometheus reaches it."""
    return [
        watch_series("backfill_watch_last_pass_timestamp_seconds", last_pass, instance),
        watch_series("backfill_watch_interval_seconds", "300x60", instance),
        {"series": f'up{{job="backfill-watch", instance="{instance}"}}', "values": up},
    ]


@dataclass
class Situation:
    name: str
    input_series: list[dict[str, str]]
    firing: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # eval time -> firing alerts


WATCH_SITUATIONS = [
    Situation("the watcher passes every 5 minutes", [*HEALTHY, *watcher(passes(5, 60))], {"60m": []}),
    Situation(
        "the watcher's passes stop at minute 20: three intervals later it fires",
        [*HEALTHY, *watcher(passes(5, 20))],
        {"34m": [], "45m": STALLED},
    ),
    Situation(
        "its holder gone, the waiting watcher still reports the cluster's stale last pass",
        [
            *HEALTHY,
            *watcher(passes(5, 20, total=20), up="1x20", instance="10.0.0.9:9109"),
            *watcher(passes(5, 20), instance="10.0.0.10:9109"),
        ],
        {"30m": [], "45m": STALLED},
    ),
    Situation(
        "every watcher target down",
        [*HEALTHY, *watcher(passes(5, 10, total=10), up="1x10 0x50")],
        {"8m": [], "20m": STALLED},
    ),
]

SITUATIONS = [
    Situation("healthy run draining its backlog, with expected 404s", HEALTHY, {"60m": []}),
    Situation(
        "backlog stuck while a worker is up",
        [
            {"series": UP, "values": "1x60"},
            series("backfill_consumer_pending_messages", "500x60"),
            series("backfill_consumer_ack_pending_messages", "16x60"),
        ],
        {"10m": [], "50m": [{"alertname": "BackfillBacklogNotShrinking", "severity": "warning"}]},
    ),
    Situation(
        "backlog growing faster than the workers drain it",
        [
            {"series": UP, "values": "1x60"},
            series("backfill_consumer_pending_messages", "100+10x60"),
            series("backfill_consumer_ack_pending_messages", "16x60"),
        ],
        {"50m": [{"alertname": "BackfillBacklogNotShrinking", "severity": "warning"}]},
    ),
    Situation(
        "every worker down: no-worker alert, not the backlog one",
        [
            {"series": UP, "values": "0x60"},
            series("backfill_consumer_pending_messages", "500x60"),
            series("backfill_consumer_ack_pending_messages", "0x60"),
        ],
        {"4m": [], "30m": [{"alertname": "BackfillNoWorkerUp", "severity": "critical"}]},
    ),
    Situation(
        "no worker target at all (scaled to zero, DNS finds nothing)",
        [{"series": 'up{job="prometheus", instance="prometheus:9090"}', "values": "1x60"}],
        {"10m": [{"alertname": "BackfillNoWorkerUp", "severity": "critical"}]},
    ),
    Situation(
        "a fifth of jellyfin requests fail with 5xx or no answer",
        [
            *HEALTHY,
            requests("jellyfin", "5xx", "0+15x60"),
            requests("jellyfin", "error", "0+15x60"),
            requests("storage", "2xx", "0+10x60"),
            requests("storage", "4xx", "0+30x60"),
        ],
        {
            "8m": [],
            "30m": [
                {"alertname": "BackfillUpstreamErrorRatioHigh", "service": "jellyfin", "severity": "warning"}
            ],
        },
    ),
    Situation(
        "a trickle of storage requests, half failing, below the minimum request rate (10/min)",
        [*HEALTHY, requests("storage", "2xx", "0+5x60"), requests("storage", "5xx", "0+5x60")],
        {"30m": []},
    ),
    Situation(
        "half of storage requests failing just above the minimum request rate (16/min)",
        [*HEALTHY, requests("storage", "2xx", "0+8x60"), requests("storage", "5xx", "0+8x60")],
        {
            "30m": [
                {"alertname": "BackfillUpstreamErrorRatioHigh", "service": "storage", "severity": "warning"}
            ]
        },
    ),
    Situation(
        "paused with workers up: the backlog stands still and nothing fires",
        [
            {"series": UP, "values": "1x60"},
            series("backfill_consumer_pending_messages", "500x60"),
            series("backfill_consumer_ack_pending_messages", "0x60"),
            series("backfill_paused", "1x60"),
        ],
        {"50m": []},
    ),
    Situation(
        "paused, then scaled to zero: only the Pushgateway still says paused",
        [
            {"series": UP, "values": "1x10 0x50"},
            series("backfill_consumer_pending_messages", "500x10"),
            series("backfill_paused", "1x10"),
            {"series": 'backfill_paused{job="backfill-producer"}', "values": "1x60"},
        ],
        {"30m": [], "55m": []},
    ),
    Situation(
        "resumed (the gauge says 0) but every worker down: the no-worker alert fires",
        [
            {"series": UP, "values": "0x60"},
            {"series": 'backfill_paused{job="backfill-producer"}', "values": "0x60"},
        ],
        {"30m": [{"alertname": "BackfillNoWorkerUp", "severity": "critical"}]},
    ),
    Situation(
        "resumed after a pause while the backlog stays stuck: the backlog alert fires again",
        [
            {"series": UP, "values": "1x90"},
            series("backfill_consumer_pending_messages", "500x90"),
            series("backfill_consumer_ack_pending_messages", "16x90"),
            series("backfill_paused", "1x30 0x60"),
        ],
        {"40m": [], "80m": [{"alertname": "BackfillBacklogNotShrinking", "severity": "warning"}]},
    ),
    Situation(
        "Agent Zero unable to publish past its own reconnects: the runbook's restart",
        [*HEALTHY[:3], series("backfill_agent_zero_unavailable", "1x20")],
        {"2m": [], "5m": [{"alertname": "BackfillAgentZeroUnavailable", "severity": "critical"}]},
    ),
    Situation(
        "an Agent Zero outage it recovers from alone (under 2 minutes): nothing fires",
        [*HEALTHY[:3], series("backfill_agent_zero_unavailable", "0x5 1x2 0x20")],
        {"5m": [], "8m": [], "20m": []},
    ),
    Situation(
        "one replica of two holding Agent Zero unavailable is enough",
        [
            *HEALTHY[:3],
            series("backfill_agent_zero_unavailable", "1x20"),
            series("backfill_agent_zero_unavailable", "0x20", instance="10.0.0.6:9108"),
        ],
        {"10m": [{"alertname": "BackfillAgentZeroUnavailable", "severity": "critical"}]},
    ),
    Situation(
        "backlog held still by an Agent Zero outage: only the Agent Zero alert",
        [
            {"series": UP, "values": "1x60"},
            series("backfill_consumer_pending_messages", "500x60"),
            series("backfill_consumer_ack_pending_messages", "16x60"),
            series("backfill_agent_zero_unavailable", "1x60"),
        ],
        {"50m": [{"alertname": "BackfillAgentZeroUnavailable", "severity": "critical"}]},
    ),
    Situation(
        "dead letters keep arriving",
        [*HEALTHY[:3], series("backfill_dlq_messages", "0+3x60")],
        {"10m": [], "30m": [{"alertname": "BackfillDeadLettersGrowing", "severity": "warning"}]},
    ),
    Situation(
        "one burst of dead letters, then none",
        [*HEALTHY[:3], series("backfill_dlq_messages", "0 40x59")],
        {"40m": []},
    ),
    *WATCH_SITUATIONS,
]


def test_promtool_accepts_the_rule_file() -> None:
    """`promtool check rules` passes on deploy/prometheus/backfill.rules.yml."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_rules())} rules found" in result.stdout


def test_rules_define_every_alert_each_with_for_severity_and_text() -> None:
    """Dead letters growing, backlog not shrinking, upstream error ratio, no worker up, the watcher
    stalled, Agent Zero unavailable; all fully described."""
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_each_alert_links_a_runbook_section_of_its_own_in_the_repository(rule: dict[str, Any]) -> None:
    """`runbook_url` is a repository file and an anchor that file's headings define, named for the alert."""
    path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
    document = REPO / path
    assert document.is_file(), f"{rule['alert']}: {path} does not exist"
    assert anchor == rule["alert"].lower()
    assert anchor in heading_anchors(document.read_text()), f"{rule['alert']}: no heading for #{anchor}"


@pytest.mark.parametrize("query", alert_queries(), ids=lambda q: q.where)
def test_every_alert_uses_only_metrics_the_programs_export(query: Query) -> None:
    """Each backfill_* name in a rule (the pause gauge included) is a sample the worker or the producer exposes."""
    unknown = query.metric_names() - exported_sample_names()
    assert not unknown, f"{query.where}: unknown metrics {sorted(unknown)} in {query.expr}"


def test_scrape_snippet_is_a_valid_prometheus_config_with_the_rules(tmp_path: Path) -> None:
    """The scrape job pasted into a prometheus.yml beside the rule file passes `promtool check config`."""
    config = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [str(RULES)],
        "scrape_configs": load_yaml(SCRAPE)["scrape_configs"],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_jobs_find_every_replica_and_the_watcher_through_docker_dns() -> None:
    """Jobs `backfill-worker` (port 9108) and `backfill-watch` (9109), every 15 s, DNS service discovery of
    the compose services; every `up{job=...}` in a rule names one of them."""
    jobs = {job["job_name"]: job for job in load_yaml(SCRAPE)["scrape_configs"]}
    assert set(jobs) == {"backfill-worker", "backfill-watch"}
    for name, port in (("backfill-worker", 9108), ("backfill-watch", 9109)):
        assert jobs[name]["scrape_interval"] == "15s"
        (dns,) = jobs[name]["dns_sd_configs"]
        assert dns["type"] == "A"
        assert dns["port"] == port
        assert set(dns["names"]) <= {name, f"tasks.{name}"}
    selected = {job for rule in alert_rules() for job in re.findall(r'up\{job="([^"]+)"', rule["expr"])}
    assert selected == set(jobs)


@pytest.mark.parametrize("situation", SITUATIONS, ids=lambda s: s.name)
def test_alerts_fire_exactly_in_their_situation(situation: Situation, tmp_path: Path) -> None:
    """promtool unit test: at each time, the set of firing alerts is exactly the expected one."""
    checks = [
        {
            "expr": 'ALERTS{alertstate="firing"}',
            "eval_time": at,
            "exp_samples": [
                {
                    "labels": "ALERTS"
                    + "{"
                    + ", ".join(f'{k}="{v}"' for k, v in {**a, "alertstate": "firing"}.items())
                    + "}",
                    "value": 1,
                }
                for a in firing
            ],
        }
        for at, firing in situation.firing.items()
    ]
    spec = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": situation.input_series, "promql_expr_test": checks}],
    }
    path = tmp_path / "backfill.rules.test.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
