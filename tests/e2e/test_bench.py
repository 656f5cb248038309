"""`python -m bench --quick` runs every section end to end, so the benchmark cannot rot unnoticed.

Only that it works and reports consistent figures is checked here: no figure is compared with a target
(timing belongs in `make bench`, not in a test on a shared machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


# The sections in three runs side by side, each with its own nats-server and upstreams (the quick
# bench's wall time is mostly waits: worker start-ups, drains, stops), their JSON merged as one run's.
GROUPS = (["throughput"], ["pace"], ["enqueue", "latency", "replay", "watch"])


@pytest.mark.timeout(600)
def test_quick_bench_runs_every_section_and_writes_json(tmp_path: Path) -> None:
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench",
                "--quick",
                "--only",
                *sections,
                "--out",
                str(tmp_path / f"{i}.json"),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, sections in enumerate(GROUPS)
    ]
    outputs = [run.communicate(timeout=540) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
    results: dict[str, object] = {}
    for i in range(len(GROUPS)):
        results.update(json.loads((tmp_path / f"{i}.json").read_text()))
    out = tmp_path / "bench.json"
    out.write_text(json.dumps(results))
    stdout = "".join(text for text, _ in outputs)
    enqueue = results["enqueue"]["sizes"]
    assert [row["rows"] for row in enqueue] == [500, 2000]
    assert all(row["producer_rows_per_s"] > 0 and row["producer_peak_rss_mib"] > 10 for row in enqueue)
    for mode in ("metadata-only", "republish"):
        entry = results["throughput"][mode]
        assert entry["workers_1"]["rows_per_s"] > entry["naive_rows_per_s"] > 0
        assert entry["workers_2"]["rows_per_s"] > 0 and entry["workers_1"]["cpu_s_per_1000_rows"] > 0
        assert set(entry["http_ceiling_rows_per_s"]) == {"16", "16-batched"}
        assert set(entry["one_worker_by_concurrency"]) == {"8"}
        assert set(entry["one_worker_by_fetch_batch"]) == {"4"}
        # one ceiling only, within the default concurrency: both comparisons are against it
        ratios = entry["ratios"]
        assert ratios["one_worker_vs_best_ceiling"] == ratios["one_worker_vs_best_ceiling_any_concurrency"]
        # the machine's load (workers, upstreams, nats-server) is accounted for, within what it has
        assert 0 < entry["workers_2"]["cores_busy"] <= (os.cpu_count() or 1) * 1.2
        # the quick run measures no ceiling at the default concurrency: that comparison is left out
        assert entry["ratios"]["one_worker_vs_ceiling_at_its_concurrency"] is None
    overhead = results["latency"]["overhead_ms"]
    assert overhead["p50"] <= overhead["p95"] <= overhead["p99"] <= overhead["max"]
    assert results["replay"]["messages"] == 500 and results["replay"]["messages_per_s"] > 0
    for run in (
        "metadata-only-workers-1",
        "metadata-only-workers-2",
        "republish-workers-1",
        "republish-workers-2",
    ):
        pace = results["pace"][run]
        assert pace["off"]["rows_per_s"] > 0 and pace["paced"]["rows_per_s"] > 0
        assert pace["throughput_ratio"] == pace["paced"]["rows_per_s"] / pace["off"]["rows_per_s"]
    assert "pace vs off" in stdout
    assert "dlq replay" in stdout and "machine:" in stdout
    watch = results["watch"]
    rows, dead = watch["rows"], watch["dead_letters"]
    assert watch["first_pass"]["enqueued"] == rows - dead and watch["first_pass"]["left_out"] == dead
    assert watch["idle_pass"]["enqueued"] == 0 and watch["idle_pass"]["catalog_requests"] == 1
    assert watch["new_rows_pass"]["enqueued"] == 10
    assert watch["full_pass"]["already_pending"] == rows + 10 - dead  # the new rows are below the mark now
    assert watch["full_pass"]["requests_total"] > watch["idle_pass"]["requests_total"] > 0
    assert "watch pass" in stdout
    report = subprocess.run(
        [sys.executable, "-m", "bench.report", str(out)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert report.stdout.count("\n| ") == 17  # header, rule and 15 figures, one line each
    assert "| enqueue 2,000 rows: producer vs raw `publish_async` |" in report.stdout
