"""WORKER_EVENT_LOOP: uvloop when installed (auto), asyncio on request, a clear error when uvloop is
demanded but missing. The loop chosen really runs the worker's coroutine."""

from __future__ import annotations

import asyncio
import sys

import pytest

from backfill.core.errors import ConfigError
from backfill.eventloop import event_loop_runner


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_asyncio_runs_on_the_standard_loop() -> None:
    assert event_loop_runner("asyncio")(loop_module()) == "asyncio"


@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_auto_and_uvloop_run_on_uvloop_when_it_is_installed(choice: str) -> None:
    pytest.importorskip("uvloop")
    assert event_loop_runner(choice)(loop_module()) == "uvloop"


def test_without_uvloop_auto_falls_back_and_an_explicit_choice_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert event_loop_runner("auto")(loop_module()) == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        event_loop_runner("uvloop")
