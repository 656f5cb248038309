"""The layout's import rules, read from the source with `ast` (nothing checked here is imported):
backfill/core is pure, enrich and pipeline see only the ports, nats-py stays in
backfill/adapters/jetstream and its private state in the one shim, the library imports no program,
the adapters import nothing above them, the producer holds no client of an external system (its
PostgreSQL, PostgREST and Pushgateway code lives in backfill/adapters, behind the ports), and its CLI
reaches a command's module only through the registry, as data.

Every import counts: at the top, inside a function, under `if TYPE_CHECKING:`, relative, or by
`importlib.import_module("...")` with a literal name. A failure names each offending module and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CORE = "backfill/core"
JETSTREAM = "backfill/adapters/jetstream"
NATSPY_SHIM = f"{JETSTREAM}/natspy.py"
# What backfill/core may not reach: the I/O, the layers above it, the programs.
CORE_FORBIDDEN = (
    "backfill.adapters",
    "backfill.wiring",
    "backfill.enrich",
    "backfill.pipeline",
    "worker",
    "producer",
    "asyncio",
    "aiohttp",
    "nats",
    "asyncpg",
    "prometheus_client",
)
# And the adapters' own means of reaching a system: a PostgreSQL connection, an HTTP request.
ADAPTER_MEANS = (
    "backfill.adapters.pgcatalog",
    "backfill.adapters.transport.Upstream",
    "backfill.adapters.transport.raise_for_status",
)
# What the adapters stand below: the programs and the layers that use them through the ports.
ABOVE_THE_ADAPTERS = ("worker", "producer", "backfill.wiring", "backfill.enrich", "backfill.pipeline")
# The clients of external systems (HTTP, SQL, NATS, the Pushgateway): only an adapter imports them.
CLIENT_LIBRARIES = (
    "aiohttp",
    "httpx",
    "requests",
    "urllib.request",
    "urllib.error",
    "http.client",
    "asyncpg",
    "psycopg",
    "psycopg2",
    "nats",
    "prometheus_client",
)
# nats-py's private state: a context's connection (`_nc`) and API prefix (`_prefix`), a pull
# subscription's subscription (`_sub`) and its undelivered messages (`_pending_queue`), `_jsm`.
NATSPY_PRIVATE = frozenset({"_nc", "_prefix", "_sub", "_pending_queue", "_jsm"})


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def sources(*roots: str) -> list[str]:
    """Repository-relative paths of the Python modules under each root (a directory or one file)."""
    found: list[str] = []
    for root in roots:
        path = REPO / root
        if path.is_file():
            found.append(root)
        else:
            found += [p.relative_to(REPO).as_posix() for p in sorted(path.rglob("*.py"))]
    assert found, f"no modules under {roots}: the rule would check nothing"
    return found


def module_name(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, path: str) -> str:
    """The module a `from ... import` names, relative imports resolved against `path`."""
    if node.level == 0:
        return node.module or ""
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package.pop()
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in {"__import__", "import_module"}
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def imported(source: str, path: str) -> Iterator[tuple[str, int]]:
    """(module, line) for every import in `source`; `from a import b` gives `a` and `a.b` (b may be a
    submodule, as in `from backfill import adapters`)."""
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, path)
            yield base, node.lineno
            for alias in node.names:
                if alias.name != "*":
                    yield f"{base}.{alias.name}", node.lineno
        elif (
            isinstance(node, ast.Call)
            and _is_dynamic_import(node.func)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def _under(name: str, roots: Iterable[str]) -> str | None:
    return next((root for root in roots if name == root or name.startswith(f"{root}.")), None)


def forbidden_imports(source: str, path: str, forbidden: Iterable[str]) -> list[Violation]:
    """The imports in `source` (the module at `path`) of anything in or under `forbidden`."""
    found: dict[tuple[int, str], Violation] = {}
    for name, line in imported(source, path):
        root = _under(name, forbidden)
        if root is not None and (line, root) not in found:
            found[line, root] = Violation(path, line, f"imports {name} ({root} is off limits here)")
    return list(found.values())


def natspy_private_access(source: str, path: str) -> list[Violation]:
    """`x._nc`, `x._sub`, ... on anything but `self`, and `getattr(x, "_sub")`."""
    found: list[Violation] = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Attribute) and node.attr in NATSPY_PRIVATE:
            if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                found.append(Violation(path, node.lineno, f"reads nats-py's private .{node.attr}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in NATSPY_PRIVATE
        ):
            found.append(Violation(path, node.lineno, f"reads nats-py's private .{node.args[1].value}"))
    return found


def check_imports(paths: Iterable[str], forbidden: Iterable[str]) -> list[Violation]:
    rules = tuple(forbidden)
    return [
        violation
        for path in paths
        for violation in forbidden_imports((REPO / path).read_text(encoding="utf-8"), path, rules)
    ]


def report(violations: list[Violation]) -> str:
    return "\n".join(str(v) for v in sorted(violations, key=lambda v: (v.path, v.line)))


# The rules.


def test_core_is_pure() -> None:
    """No I/O library, no adapter (not even for type checking), no layer above it, no program."""
    violations = check_imports(sources(CORE), CORE_FORBIDDEN)
    assert not violations, report(violations)


def test_enrich_pipeline_and_republish_see_only_the_ports() -> None:
    paths = sources("backfill/enrich.py", "backfill/pipeline.py", "backfill/republish.py")
    violations = check_imports(paths, ["backfill.adapters"])
    assert not violations, report(violations)


@pytest.mark.parametrize("area", ["backfill", "worker", "producer"])
def test_only_the_jetstream_adapter_imports_nats(area: str) -> None:
    paths = [p for p in sources(area) if not p.startswith(f"{JETSTREAM}/")]
    violations = check_imports(paths, ["nats"])
    assert not violations, report(violations)


@pytest.mark.parametrize("area", ["backfill", "worker", "producer"])
def test_natspy_private_state_is_read_only_in_the_shim(area: str) -> None:
    violations = [
        violation
        for path in sources(area)
        if path != NATSPY_SHIM
        for violation in natspy_private_access((REPO / path).read_text(encoding="utf-8"), path)
    ]
    assert not violations, report(violations)


def test_the_library_imports_no_program() -> None:
    violations = check_imports(sources("backfill"), ["worker", "producer"])
    assert not violations, report(violations)


def test_the_adapters_import_nothing_above_them() -> None:
    """No program, no wiring, and not the orchestrators that use the adapters through the ports."""
    violations = check_imports(sources("backfill/adapters"), ABOVE_THE_ADAPTERS)
    assert not violations, report(violations)


def test_the_producer_holds_no_client_of_an_external_system() -> None:
    """The run log, publisher-discord's metrics table and the Pushgateway are adapters: the producer
    reaches them through the ports and `backfill.wiring`, never through an HTTP, SQL or NATS library."""
    violations = check_imports(sources("producer"), CLIENT_LIBRARIES + ADAPTER_MEANS)
    assert not violations, report(violations)


def command_modules() -> list[str]:
    return [module_name(path) for path in sources("producer/commands") if not path.endswith("__init__.py")]


def test_the_producer_imports_a_command_module_only_through_the_registry() -> None:
    """The CLI and the registry (`producer.commands`) name command modules only as data, imported when
    the command runs; and each command module stands alone, importing no other."""
    modules = command_modules()
    violations = check_imports(["producer/cli.py", "producer/commands/__init__.py"], modules)
    for path in sources("producer/commands"):
        others = [module for module in modules if module != module_name(path)]
        violations += check_imports([path], others)
    assert not violations, report(violations)


def test_the_doubles_import_nothing_of_the_producer() -> None:
    violations = check_imports(sources("backfill_doubles"), ["producer"])
    assert not violations, report(violations)


# The checker itself: it must see what the rules forbid, wherever it is written, and nothing else.

OFFENDER = """\
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..adapters import jellyfin
from backfill import pipeline

if TYPE_CHECKING:
    from backfill.adapters.jetstream.bus import Bus


def late() -> None:
    import nats.js
    importlib.import_module("prometheus_client")
"""


def test_the_checker_finds_every_kind_of_import() -> None:
    found = forbidden_imports(OFFENDER, "backfill/core/offender.py", CORE_FORBIDDEN)
    assert [(v.line, v.what.split()[1]) for v in found] == [
        (3, "asyncio"),
        (6, "backfill.adapters"),  # relative, resolved against backfill/core
        (7, "backfill.pipeline"),  # a module imported by name from its package
        (10, "backfill.adapters.jetstream.bus"),  # for type checking only
        (14, "nats.js"),  # inside a function
        (15, "prometheus_client"),
    ]
    assert str(found[0]) == ("backfill/core/offender.py:3: imports asyncio (asyncio is off limits here)")


def test_the_checker_resolves_relative_imports_from_a_package() -> None:
    source = "from . import wire\nfrom .. import enrich\n"
    found = forbidden_imports(source, "backfill/core/__init__.py", CORE_FORBIDDEN)
    assert [(v.line, v.what.split()[1]) for v in found] == [(2, "backfill.enrich")]


def test_the_checker_leaves_look_alikes_alone() -> None:
    source = "import natsort\nfrom backfill.core.outcome import Ack\nimport workers\nimport asyncio_extra\n"
    assert forbidden_imports(source, "backfill/core/x.py", CORE_FORBIDDEN) == []


def test_the_checker_finds_natspy_private_state_on_anything_but_self() -> None:
    source = (
        "class Ours:\n"
        "    def __init__(self, js):\n"
        "        self._nc = js._nc\n"
        "        self._prefix = ''\n"
        "        queue = getattr(psub, '_sub', None)._pending_queue\n"
    )
    found = natspy_private_access(source, "worker/x.py")
    assert sorted((v.line, v.what) for v in found) == [
        (3, "reads nats-py's private ._nc"),
        (5, "reads nats-py's private ._pending_queue"),
        (5, "reads nats-py's private ._sub"),
    ]
