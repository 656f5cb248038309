"""The PMOVES JSON schemas the doubles, the tests and the demo validate against (see README.md here)."""

from __future__ import annotations

from pathlib import Path

CONTRACTS_DIR = Path(__file__).resolve().parent
