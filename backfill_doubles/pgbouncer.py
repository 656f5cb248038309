"""A real PgBouncer in transaction mode in front of an `EmbeddedPostgres`, for the pooler tests.

Supabase's pooler (Supavisor) on port 6543 and any pgbouncer with `pool_mode = transaction` hand each
transaction to whichever server connection is free, so a statement prepared on one connection is
missing on the next. This runs the Debian `pgbouncer` binary (`apt-get install pgbouncer`) on a
loopback port with a small server pool, `auth_type = any` (the embedded server trusts local
connections), no Unix socket, and as the embedded server's unprivileged user when we are root (it
refuses to run as root).

    with EmbeddedPostgres() as pg, PgBouncer(pg.port) as pooler:
        catalog = await PostgresCatalog.open(pooler.dsn, transaction_pooler=True)
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from backfill_doubles.natsserver import free_port
from backfill_doubles.postgres import SUPERUSER, SYSTEM_USER

BINARY_DIRS = "/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"


def binary() -> str | None:
    """The pgbouncer executable, or None when it is not installed."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path=BINARY_DIRS)


class PgBouncer:
    """One pgbouncer process in transaction mode; `start()` (or `with`) runs it, `stop()` cleans up."""

    def __init__(self, postgres_port: int, server_pool: int = 4) -> None:
        self.postgres_port = postgres_port
        self.server_pool = server_pool
        self.port = 0
        self._root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def start(self, within: float = 10.0) -> str:
        executable = binary()
        if executable is None:
            raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        self._root = Path(tempfile.mkdtemp(prefix="pmoves-pgbouncer-"))
        atexit.register(self.stop)
        self.port = free_port()
        config = self._root / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"postgres = host=127.0.0.1 port={self.postgres_port} user={SUPERUSER} dbname=postgres\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\n"
            f"default_pool_size = {self.server_pool}\nmax_client_conn = 500\n"
            f"logfile = {self._root / 'pgbouncer.log'}\n"
        )
        command = [executable, str(config)]
        if os.geteuid() == 0:
            shutil.chown(self._root, SYSTEM_USER, SYSTEM_USER)
            shutil.chown(config, SYSTEM_USER, SYSTEM_USER)
            drop = ["setpriv", f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--clear-groups"]
            command = [*drop, *command]
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_listening(within)
        return self.dsn

    def _wait_listening(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        log = self._root / "pgbouncer.log" if self._root else None
        text = log.read_text()[-2000:] if log and log.exists() else ""
        self.stop()
        raise RuntimeError(f"pgbouncer did not start listening: {text}")

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
