"""`producer monitoring`: fit the scrape job and alert rules into PMOVES' Prometheus as it is deployed
(`producer.monitoring`, `producer.prometheus_config`), and say how to start it. Writes files only:
no settings, no network."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backfill.core.errors import ConfigError
from producer.monitoring import MONITORING_COMPOSE, PUSHGATEWAY_SERVICE, WORKER_NETWORK, integrate
from producer.prometheus_config import JOB, duration_seconds
from producer.shell import LocalCommand

HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")
DNS_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


def report(result: dict[str, Any]) -> str:
    files, run = result["files"], result["commands"]
    lines = [f"wrote {path}" for path in files.values()]
    if result["network_added"]:
        lines.append(f"the override also attaches prometheus to the external network {WORKER_NETWORK}")
    lines += [
        "",
        f"In {result['compose_dir']} (the directory holding {MONITORING_COMPOSE}), recreate Prometheus:",
        f"  {run['start']}",
        "After running this command again later, reload instead (the mounts stay in place):",
        f"  {run['reload']}",
    ]
    gateway = result["pushgateway"]
    if gateway["added"]:
        lines += [
            "",
            "So that a pause stays visible to the alerts with no worker up, set in the backfill's .env:",
            f"  BACKFILL_PUSHGATEWAY_URL={gateway['url']}",
        ]
    elif gateway["scraped"] is not None:
        lines += [
            "",
            f"Point BACKFILL_PUSHGATEWAY_URL in the backfill's .env at {gateway['scraped']} (http://...), so"
            " that a pause stays visible to the alerts with no worker up.",
        ]
    else:
        lines += [
            "",
            "No Pushgateway is scraped: scaling the workers to zero fires BackfillNoWorkerUp, paused or not.",
        ]
    return "\n".join(lines)


def static_target(text: str) -> str:
    match = HOST_PORT.fullmatch(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def dns_name(text: str) -> str:
    if DNS_NAME.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"not a DNS name: {text!r}")
    return text


def scrape_interval(text: str) -> str:
    try:
        seconds = duration_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the scrape interval must be positive")
    return text


def monitoring_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Merge the backfill's scrape job and alert rules into PMOVES' prometheus.yml and write "
        "a compose override mounting the result into PMOVES' Prometheus (deploy/prometheus/README.md)."
    )
    parser.add_argument(
        "--prometheus-config",
        type=Path,
        required=True,
        metavar="PATH",
        help="PMOVES' monitoring/prometheus/prometheus.yml (read only)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write the files")
    parser.add_argument(
        "--compose-dir",
        type=Path,
        metavar="DIR",
        help=f"the directory holding {MONITORING_COMPOSE} (default: the parent of the config's directory)",
    )
    targets = parser.add_mutually_exclusive_group()
    targets.add_argument(
        "--target-dns",
        type=dns_name,
        default=JOB,
        metavar="NAME",
        help=f"name whose DNS A records are the workers (default {JOB}; tasks.{JOB} on Swarm)",
    )
    targets.add_argument(
        "--static-target",
        type=static_target,
        action="append",
        metavar="HOST:PORT",
        help="scrape this address instead of discovering workers (repeatable; outside Docker)",
    )
    parser.add_argument(
        "--scrape-interval",
        type=scrape_interval,
        metavar="DURATION",
        help="the jobs' scrape interval (default 15s, as PMOVES scrapes)",
    )
    gateways = parser.add_mutually_exclusive_group()
    gateways.add_argument(
        "--pushgateway-target",
        type=static_target,
        metavar="HOST:PORT",
        help=f"scrape this Pushgateway instead of adding {PUSHGATEWAY_SERVICE} to the override",
    )
    gateways.add_argument(
        "--no-pushgateway",
        action="store_true",
        help="neither add nor scrape a Pushgateway (a pause then only holds the alerts while workers run)",
    )
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")


def run_monitoring(args: argparse.Namespace, _program: Callable[[], argparse.ArgumentParser]) -> int:
    try:
        result = integrate(args)
    except ConfigError as exc:
        print(f"producer monitoring: {exc}", file=sys.stderr)
        return 2
    if not result["monitoring_compose_found"]:
        print(
            f"producer monitoring: note: no {MONITORING_COMPOSE} in {result['compose_dir']}; the override's "
            "paths are relative to that directory (pass --compose-dir)",
            file=sys.stderr,
        )
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


MONITORING = LocalCommand(
    monitoring_arguments,
    run_monitoring,
    {
        "monitoring": "producer monitoring --prometheus-config PMOVES/monitoring/prometheus/prometheus.yml "
        "--out PMOVES/monitoring/backfill"
    },
)
