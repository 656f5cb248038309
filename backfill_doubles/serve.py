"""Run a double's `aiohttp.web.Application` on a free loopback port.

Two ways, same result (a base URL such as `http://127.0.0.1:41234`):

- `async with serve(app) as url:` runs the app in the caller's event loop (async tests, the demo).
- `with BackgroundServer(app) as server:` runs it in a dedicated thread with its own loop, for sync
  tests or for clients that must not share the loop with the server (benchmarks). `server.call(fn)`
  runs `fn` in the server thread when a test wants to change state atomically with respect to the
  handlers; plain attribute sets from the test thread are fine too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")

_HOST = "127.0.0.1"


async def _start_site(app: web.Application, port: int, shutdown_timeout: float) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, _HOST, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return runner, f"http://{_HOST}:{bound_port}"


@asynccontextmanager
async def serve(app: web.Application, *, port: int = 0, shutdown_timeout: float = 0.5) -> AsyncIterator[str]:
    """Serve `app` in the running loop for the duration of the block; yields the base URL."""
    runner, url = await _start_site(app, port, shutdown_timeout)
    try:
        yield url
    finally:
        await runner.cleanup()


class BackgroundServer:
    """An aiohttp app served from its own thread and event loop."""

    def __init__(self, app: web.Application, *, port: int = 0, shutdown_timeout: float = 0.5) -> None:
        self.app = app
        self.url = ""
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Start serving; returns the base URL once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("BackgroundServer already started")
        self._thread = threading.Thread(target=self._run, name="double-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"server did not start within {timeout} s")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError("server failed to start") from self._error
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, run the app's cleanup hooks and join the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"server thread did not stop within {timeout} s")
        self._thread = None

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `fn()` in the server's loop thread and return its result (or raise its error)."""

        async def invoke() -> T:
            return fn()

        return self.run(invoke(), timeout)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Await `coro` in the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._running_loop()).result(timeout)

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._thread is None:
            raise RuntimeError("BackgroundServer is not running")
        return self._loop

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to start(); a thread cannot raise to its parent
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner, self.url = await _start_site(self.app, self._port, self._shutdown_timeout)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()
