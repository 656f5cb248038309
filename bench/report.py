"""`python -m bench.report [results.json]`: the performance table, from a benchmark run.

It goes in docs/performance.md, between the `<!-- bench-table -->` markers.

Every figure comes from the one JSON file (one run), so the ratios compare things measured side by
side; the targets are issue 7's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.run import RESULTS, best_ceiling


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _worker_rows(results: dict[str, Any]) -> list[str]:
    lines = []
    for mode in ("metadata-only", "republish"):
        entry = results["throughput"][mode]
        one, two = entry["workers_1"], entry["workers_2"]
        ceilings = entry["http_ceiling_rows_per_s"]
        best_key = best_ceiling(ceilings, entry["default_concurrency"])
        top_key = best_ceiling(ceilings)
        ratios = entry["ratios"]
        naive, ceiling, scale = (
            ratios["one_worker_vs_naive"],
            ratios["one_worker_vs_best_ceiling"],
            ratios["two_workers_vs_one"],
        )
        lines += [
            f"| worker, {mode}: 1 process (default settings) | {one['rows_per_s']:.0f} rows/s, "
            f"{one['cpu_s_per_1000_rows']:.2f} CPU s per 1,000 rows | | |",
            f"| worker, {mode}: vs the plan's sequential loop ({entry['naive_rows_per_s']:.1f} rows/s) "
            f"| {naive:.0f}x | >= 40x | {_mark(naive >= 40)} |",
            f"| worker, {mode}: vs the best raw aiohttp ceiling up to its concurrency "
            f"({ceilings[best_key]:.0f} rows/s at c{best_key}) | {ceiling:.0%} | >= 50 % | "
            f"{_mark(ceiling >= 0.5)} |",
            f"| worker, {mode}: vs the best raw aiohttp ceiling at any concurrency measured "
            f"({ceilings[top_key]:.0f} rows/s at c{top_key}) | "
            f"{ratios['one_worker_vs_best_ceiling_any_concurrency']:.0%} | (for reference) | |",
        ]
        same = ratios.get("one_worker_vs_ceiling_at_its_concurrency")
        key = f"{entry['default_concurrency']}-batched"
        if same is not None and key != best_key:  # else the row above says it already
            lines.append(
                f"| worker, {mode}: vs the raw ceiling at the worker's own concurrency ({ceilings[key]:.0f} "
                f"rows/s at c{key}) | {same:.0%} | (for reference) | |"
            )
        busy = ""
        if "machine_cores_busy" in two:
            busy = (
                f" ({two['cores_busy']:.1f} cores in its processes, "
                f"{two['machine_cores_busy']:.1f} machine-wide)"
            )
        lines.append(
            f"| worker, {mode}: 2 processes{busy} | {two['rows_per_s']:.0f} rows/s = "
            f"{scale:.2f}x one | >= 1.6x | {_mark(scale >= 1.6)} |"
        )
    return lines


def table(results: dict[str, Any]) -> str:
    enqueue = results["enqueue"]["sizes"]
    latency = results["latency"]["overhead_ms"]
    replay = results["replay"]
    rss = results["enqueue"]["rss_ratio_largest_to_smallest"]
    lines = [
        f"Measured {results['started']} on {results['machine']}; upstream latency "
        + ", ".join(f"{k} {v:g} ms" for k, v in results["upstream_latency_ms"].items())
        + ".",
        "",
        "| figure | measured | target | |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| enqueue {row['rows']:,} rows: producer vs raw `publish_async` | "
        f"{row['producer_rows_per_s']:,.0f} vs {row['raw_publish_async_per_s']:,.0f} rows/s = "
        f"{row['ratio']:.0%} | >= 60 % | {_mark(row['ratio'] >= 0.6)} |"
        for row in enqueue
    ]
    lines.append(
        f"| producer peak RSS, {enqueue[-1]['rows']:,} vs {enqueue[0]['rows']:,} rows | "
        f"{enqueue[-1]['producer_peak_rss_mib']:.1f} vs {enqueue[0]['producer_peak_rss_mib']:.1f} MiB = "
        f"{rss:.2f}x | <= 1.2x | {_mark(rss <= 1.2)} |"
    )
    lines += _worker_rows(results)
    lines.append(
        f"| overhead per row (p50 / p95 / p99), not saturated | {latency['p50']:.1f} / "
        f"{latency['p95']:.1f} / {latency['p99']:.1f} ms | p99 < 25 ms | {_mark(latency['p99'] < 25)} |"
    )
    lines.append(
        f"| dead-letter replay, {replay['messages']:,} messages | {replay['messages_per_s']:,.0f} msg/s | "
        f">= 5,000 | {_mark(replay['messages_per_s'] >= 5000)} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else RESULTS
    print(table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
