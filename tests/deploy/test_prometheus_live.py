"""A real Prometheus scrapes a real worker through a backfill run, and a real watcher after it; every
dashboard and alert query runs on it.

One scenario (module fixture) records what happened; each test asserts one behaviour of it:
the embedded stack, a `worker` serving /metrics on a free port, a `prometheus` scraping it every second
with the project's scrape jobs and rule file, `producer enqueue --all-missing`, then `producer watch`
(whose first pass finds the rows the run dead-lettered), then every query.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from backfill_doubles.natsserver import free_port
from backfill_doubles.stack import EmbeddedStack, StackOptions
from tests.deploy.artifacts import (
    RULES,
    SCRAPE,
    Query,
    alert_queries,
    dashboard_queries,
    healthcheck_command,
    load_yaml,
    on_host,
)
from tests.e2e.conftest import cli

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        PROMETHEUS is None or PROMTOOL is None,
        reason="prometheus/promtool not installed (Debian package `prometheus`; .ci/run installs it)",
    ),
]
SETTLED = ("done", "skipped", "dead_lettered")
# Series that appear only when first used during the run; rate() and increase() need two samples of each.
BORN_IN_RUN = " and on () ".join(
    f"min(count_over_time({name}[30s])) >= 2"
    for name in (
        "backfill_dead_letters_total",
        "backfill_upstream_requests_total",
        "backfill_processing_duration_seconds_count",
    )
)
# After a run whose backlog is empty, with workers up and no 5xx, only the dead-letter alert's condition
# holds (the DLQ grew within its window): it is pending, the others return nothing.
ALERT_HOLDS = {
    "BackfillDeadLettersGrowing": True,
    "BackfillBacklogNotShrinking": False,
    "BackfillUpstreamErrorRatioHigh": False,
    "BackfillNoWorkerUp": False,
    "BackfillWatchStalled": False,  # the watcher passes every second
    "BackfillAgentZeroUnavailable": False,
}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (httpx.HTTPError, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)  # the poll interval, not a wait for the condition


@dataclass
class Scenario:
    """Everything observed during the run, for the tests to assert on."""

    enqueued: int = 0
    metrics_text: str = ""
    promtool_metrics: subprocess.CompletedProcess[str] | None = None
    dashboard: dict[str, dict[str, Any]] = field(default_factory=dict)  # where -> API answer
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    alert_states: dict[str, str] = field(default_factory=dict)
    healthchecks_live: list[int] = field(default_factory=list)
    healthchecks_gone: list[int] = field(default_factory=list)
    worker_exit: int | None = None
    no_worker_after_stop: list[dict[str, Any]] = field(default_factory=list)
    watcher_metrics: str = ""
    watcher_health_live: list[int] = field(default_factory=list)
    watcher_health_gone: list[int] = field(default_factory=list)
    watcher_exit: int | None = None


class PrometheusProcess:
    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        """`targets`: the address of each shipped job (by job name), scraped every second."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": job["job_name"],
                    "metrics_path": job["metrics_path"],
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [targets[job["job_name"]]]}],
                }
                for job in load_yaml(SCRAPE)["scrape_configs"]
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.args = [
            str(PROMETHEUS),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=5)

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.http.get("/-/ready").status_code == 200, "prometheus to be ready")

    def query(self, expr: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get("/api/v1/query", params={"query": expr}).json()
        return answer

    def results(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        assert answer["status"] == "success", answer
        found: list[dict[str, Any]] = answer["data"]["result"]
        return found

    def alert_states(self) -> dict[str, str]:
        alerts = self.http.get("/api/v1/alerts").json()["data"]["alerts"]
        return {alert["labels"]["alertname"]: alert["state"] for alert in alerts}

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def all_settled(text: str, enqueued: int) -> bool:
    values = metric_values(text)
    settled = sum(values.get(("backfill_messages_total", (("outcome", o),)), 0) for o in SETTLED)
    backlog = (
        values[("backfill_consumer_pending_messages", ())]
        + values[("backfill_consumer_ack_pending_messages", ())]
    )
    return settled == enqueued and backlog == 0 and values[("backfill_in_flight", ())] == 0


def healthcheck_commands() -> list[list[str]]:
    """The Dockerfile HEALTHCHECK (compose adds none), its script taken from this checkout."""
    return [on_host(healthcheck_command())]


def run_healthchecks(port: int, env: dict[str, str], *args: str) -> list[int]:
    """Exit codes of the healthchecks, each script run by bash as the image runs it, on this worker's port
    (or with `args`, as compose runs it for the watcher: its port as the argument)."""
    env = {**env, "WORKER_METRICS_PORT": str(port)}
    return [
        subprocess.run(
            ["bash", *command, *args], env=env, capture_output=True, timeout=10, check=False
        ).returncode
        for command in healthcheck_commands()
    ]


def evaluate(prometheus: PrometheusProcess, queries: list[Query]) -> dict[str, dict[str, Any]]:
    return {query.where: prometheus.query(query.for_prometheus()) for query in queries}


def worker_env(stack: EmbeddedStack) -> dict[str, str]:
    """The stack's variables, names no other test uses, and consumer stats refreshed every second."""
    tag = uuid.uuid4().hex[:10]
    return {
        **os.environ,
        **stack.env(
            BACKFILL_STREAM=f"BF_{tag}",
            BACKFILL_DLQ_STREAM=f"BFDLQ_{tag}",
            BACKFILL_CONSUMER=f"workers-{tag}",
            BACKFILL_SUBJECT_PREFIX=f"t{tag}.backfill",
            BACKFILL_WATCH_BUCKET=f"WATCH_{tag}",
            BACKFILL_WATCH_LEASE_BUCKET=f"WATCHLEASE_{tag}",
            BACKFILL_WATCH_INTERVAL="1",
            WORKER_STATS_INTERVAL="1",
        ),
    }


def enqueue_and_settle(http: httpx.Client, env: dict[str, str], scenario: Scenario) -> None:
    """`producer enqueue --all-missing`, then wait until the worker's /metrics shows every row settled."""
    produced = subprocess.run(
        [cli("producer"), "enqueue", "--all-missing", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert produced.returncode == 0, produced.stderr
    scenario.enqueued = json.loads(produced.stdout.splitlines()[-1])["enqueued"]

    def settled_metrics() -> str | None:
        text = http.get("/metrics").text
        return text if all_settled(text, scenario.enqueued) else None

    scenario.metrics_text = wait_for(settled_metrics, "the worker to settle every enqueued row")
    scenario.promtool_metrics = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=scenario.metrics_text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def wait_until_prometheus_saw_the_run(prometheus: PrometheusProcess, enqueued: int) -> None:
    """Scraped after the run ended, two samples of every series it created, rules evaluated on them."""
    settled = f'sum(backfill_messages_total{{outcome=~"{"|".join(SETTLED)}"}})'
    wait_for(
        lambda: [r for r in prometheus.results(settled) if float(r["value"][1]) == enqueued],
        "prometheus to scrape the finished run",
    )
    wait_for(lambda: prometheus.results(BORN_IN_RUN), "two samples of every series the run created")
    # the consumer gauges come from the worker's periodic consumer_info, a refresh after the last ack
    drained = "max(backfill_consumer_pending_messages) + max(backfill_consumer_ack_pending_messages) == 0"
    wait_for(lambda: prometheus.results(drained), "a scrape showing the backlog drained")
    wait_for(
        lambda: any(state == "pending" for state in prometheus.alert_states().values()),
        "the rules to evaluate the finished run",
    )


def observe(prometheus: PrometheusProcess, scenario: Scenario) -> None:
    scenario.dashboard = evaluate(prometheus, dashboard_queries())
    scenario.alerts = evaluate(prometheus, alert_queries())
    groups = prometheus.http.get("/api/v1/rules").json()["data"]["groups"]
    scenario.rules = [rule for group in groups for rule in group["rules"]]
    scenario.alert_states = prometheus.alert_states()


def stop_worker(
    worker: subprocess.Popen[bytes],
    port: int,
    env: dict[str, str],
    prometheus: PrometheusProcess,
    scenario: Scenario,
) -> None:
    """Healthchecks while it runs, SIGTERM, healthchecks again, then the no-worker condition."""
    scenario.healthchecks_live = run_healthchecks(port, env)
    worker.send_signal(signal.SIGTERM)
    scenario.worker_exit = worker.wait(timeout=40)
    scenario.healthchecks_gone = run_healthchecks(port, env)
    scenario.no_worker_after_stop = wait_for(
        lambda: prometheus.results('absent(up{job="backfill-worker"} == 1)'),
        "the no-worker condition once the worker is gone",
    )


def start_watcher(port: int, env: dict[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    """`producer watch` after the run, serving /metrics on `port`, its first pass completed."""
    with (workdir / "watch.log").open("wb") as log:
        watcher = subprocess.Popen(
            [cli("producer"), "watch", "--metrics-port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    completed = ("backfill_watch_passes_total", (("result", "completed"),))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        wait_for(
            lambda: metric_values(http.get("/metrics").text).get(completed, 0) >= 1, "a first watch pass"
        )
    return watcher


def watch_and_observe(
    prometheus: PrometheusProcess, port: int, env: dict[str, str], workdir: Path, scenario: Scenario
) -> None:
    """The watcher scraped twice at least, every query evaluated, then SIGTERM with healthchecks around it."""
    watcher = start_watcher(port, env, workdir)
    try:
        wait_for(
            lambda: prometheus.results(
                'min(count_over_time(backfill_watch_passes_total[30s])) >= 2 and on () up{job="backfill-watch"} == 1'
            ),
            "two scrapes of the watcher",
        )
        scenario.watcher_metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        observe(prometheus, scenario)
        scenario.watcher_health_live = run_healthchecks(0, env, str(port))
        watcher.send_signal(signal.SIGTERM)
        scenario.watcher_exit = watcher.wait(timeout=40)
        scenario.watcher_health_gone = run_healthchecks(0, env, str(port))
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def run_scenario(stack: EmbeddedStack, workdir: Path) -> Scenario:
    scenario, env, port, watch_port = Scenario(), worker_env(stack), free_port(), free_port()
    with (workdir / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [cli("worker"), "--metrics-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    targets = {"backfill-worker": f"127.0.0.1:{port}", "backfill-watch": f"127.0.0.1:{watch_port}"}
    prometheus = PrometheusProcess(workdir, targets)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, "the worker to be ready")
            prometheus.start()
            wait_for(
                lambda: prometheus.results('count_over_time(up{job="backfill-worker"}[1m]) >= 2 and up == 1'),
                "two successful scrapes of the idle worker (so rates start from zero)",
            )
            enqueue_and_settle(http, env, scenario)
        wait_until_prometheus_saw_the_run(prometheus, scenario.enqueued)
        watch_and_observe(prometheus, watch_port, env, workdir, scenario)
        stop_worker(worker, port, env, prometheus, scenario)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        prometheus.stop()
    return scenario


@pytest.fixture(scope="module")
def scenario(
    nats_url: str, contracts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    workdir = tmp_path_factory.mktemp("prometheus-live")
    options = StackOptions(size=120, nats_url=nats_url, contracts_dir=contracts_dir)
    with EmbeddedStack(options) as stack:
        yield run_scenario(stack, workdir)


def series(answer: dict[str, Any]) -> list[dict[str, Any]]:
    assert answer["status"] == "success", answer
    found: list[dict[str, Any]] = answer["data"]["result"]
    return found


def value(sample: dict[str, Any]) -> float:
    return float(sample["value"][1])


def test_promtool_accepts_the_workers_metrics_exposition(scenario: Scenario) -> None:
    """`promtool check metrics` finds no problem in /metrics after a run (names, units, help, types)."""
    assert scenario.promtool_metrics is not None
    assert scenario.promtool_metrics.returncode == 0, (
        scenario.promtool_metrics.stdout + scenario.promtool_metrics.stderr
    )
    assert scenario.enqueued > 0


@pytest.mark.parametrize("query", dashboard_queries(), ids=lambda q: q.where)
def test_dashboard_query_runs_on_prometheus(scenario: Scenario, query: Query) -> None:
    """The panel query parses and evaluates; every panel but the Pushgateway ones shows data after a run."""
    result = series(scenario.dashboard[query.where])
    if not any(name.startswith("backfill_producer_") for name in query.metric_names()):
        assert result, f"{query.where} shows no data: {query.for_prometheus()}"


def test_throughput_shows_the_rows_done_in_the_run(scenario: Scenario) -> None:
    """Throughput by outcome has every outcome, and a positive rate for `done`."""
    result = series(scenario.dashboard["Throughput by outcome / A"])
    by_outcome = {r["metric"]["outcome"]: value(r) for r in result}
    assert set(by_outcome) == {"done", "skipped", "retried", "dead_lettered"}
    assert by_outcome["done"] > 0


def test_eta_is_zero_once_the_backlog_is_drained(scenario: Scenario) -> None:
    """With nothing pending and rows settled in the last 10 minutes, the ETA is 0 seconds."""
    (eta,) = series(scenario.dashboard["ETA / A"])
    assert value(eta) == 0


def test_upstream_latency_is_a_real_number_for_every_service(scenario: Scenario) -> None:
    """p95 per upstream is finite for jellyfin, agent_zero, catalog and storage."""
    result = series(scenario.dashboard["Upstream latency p95 by service / A"])
    p95 = {r["metric"]["service"]: value(r) for r in result}
    assert set(p95) == {"jellyfin", "agent_zero", "catalog", "storage"}
    assert all(math.isfinite(v) and v > 0 for v in p95.values()), p95


def test_dead_letter_panel_shows_every_reason_the_worker_counted(scenario: Scenario) -> None:
    """The reasons on the panel are exactly those on the worker's backfill_dead_letters_total."""
    counted = {
        dict(labels)["reason"]
        for (name, labels), _ in metric_values(scenario.metrics_text).items()
        if name == "backfill_dead_letters_total"
    }
    shown = {r["metric"]["reason"] for r in series(scenario.dashboard["Dead letters by reason / A"])}
    assert counted and shown == counted


def test_in_flight_panel_has_one_line_per_replica(scenario: Scenario) -> None:
    """One worker ran, so one instance, idle after the run."""
    (line,) = series(scenario.dashboard["In flight per replica / A"])
    assert line["metric"]["instance"].startswith("127.0.0.1:")
    assert value(line) == 0


@pytest.mark.parametrize("query", alert_queries(), ids=lambda q: q.where)
def test_alert_expression_holds_only_when_it_should_after_a_run(scenario: Scenario, query: Query) -> None:
    """Each alert expression evaluates; only the dead-letter one holds (the run dead-lettered rows)."""
    result = series(scenario.alerts[query.where])
    assert bool(result) is ALERT_HOLDS[query.where], result


def test_every_rule_evaluates_without_error(scenario: Scenario) -> None:
    """Prometheus loaded every rule and reports each one healthy after evaluating it."""
    assert {rule["name"] for rule in scenario.rules} == set(ALERT_HOLDS)
    for rule in scenario.rules:
        assert rule["health"] == "ok", rule


def test_dead_letter_alert_is_pending_and_nothing_else_is_active(scenario: Scenario) -> None:
    """After a run with dead letters, BackfillDeadLettersGrowing waits out its `for:`; no other alert is active."""
    assert scenario.alert_states == {"BackfillDeadLettersGrowing": "pending"}


def test_healthchecks_pass_while_the_worker_runs_and_fail_once_it_stops(scenario: Scenario) -> None:
    """The image's healthcheck exits 0 against a live worker, non-zero after it stopped."""
    assert scenario.healthchecks_live == [0]
    assert all(code != 0 for code in scenario.healthchecks_gone)


def test_worker_exits_zero_on_sigterm(scenario: Scenario) -> None:
    """SIGTERM (what compose sends) stops an idle worker cleanly with exit code 0."""
    assert scenario.worker_exit == 0


def test_no_worker_condition_holds_once_the_worker_is_gone(scenario: Scenario) -> None:
    """After the only worker stopped, BackfillNoWorkerUp's expression returns a series."""
    assert scenario.no_worker_after_stop


def test_the_watcher_serves_its_metrics_and_promtool_accepts_them(scenario: Scenario) -> None:
    """/metrics of `producer watch` after a pass: the lease held, the last pass, rows left out for their
    dead letters and waiting for an operator (the run dead-lettered some), and a clean exposition."""
    values = metric_values(scenario.watcher_metrics)
    assert values[("backfill_watch_lease_held", ())] == 1
    assert values[("backfill_watch_interval_seconds", ())] == 1
    assert values[("backfill_watch_last_pass_timestamp_seconds", ())] > 0
    waiting = {
        dict(labels)["reason"] for (name, labels) in values if name == "backfill_watch_dead_letters_waiting"
    }
    assert waiting, "the run's dead letters show as waiting"
    checked = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=scenario.watcher_metrics,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_watchers_healthcheck_passes_while_it_runs_and_it_exits_zero_on_sigterm(
    scenario: Scenario,
) -> None:
    """The image's healthcheck with the watcher's port (as compose runs it): 0 while it runs, not after;
    SIGTERM (what compose sends) ends it with exit code 0."""
    assert scenario.watcher_health_live == [0]
    assert all(code != 0 for code in scenario.watcher_health_gone)
    assert scenario.watcher_exit == 0
