"""PMOVES Jellyfin metadata backfill: the core, the adapters and the settings both programs share."""

from __future__ import annotations

import sys
from importlib import metadata

DISTRIBUTION = "pmoves-jellyfin-backfill"


def version_text(program: str) -> str:
    """What `--version` prints: the program, the installed distribution's version, Python's."""
    try:
        number = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        number = "unknown"
    return f"{program} {number} ({DISTRIBUTION}, Python {sys.version.split()[0]})"
