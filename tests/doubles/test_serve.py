"""serve() and BackgroundServer: loopback URLs, clean shutdown, calls into the server thread."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
from aiohttp import web

from backfill_doubles.jellyfin import JellyfinDouble
from backfill_doubles.serve import BackgroundServer, serve

USER = "6f1c8a0e2b7d4c3f9a5e1d2c3b4a5f60"


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"thread": threading.current_thread().name})

    app = web.Application()
    app.router.add_get("/", hello)
    return app


async def test_serve_yields_a_loopback_url_that_answers() -> None:
    """serve() binds a free port on 127.0.0.1 and serves the app in the current loop."""
    async with serve(hello_app()) as url, httpx.AsyncClient() as http:
        assert url.startswith("http://127.0.0.1:")
        response = await http.get(url + "/")
    assert response.json() == {"thread": threading.current_thread().name}


def test_background_server_serves_from_its_own_thread_and_leaves_none_behind() -> None:
    """BackgroundServer answers from a dedicated thread and joins it on stop()."""
    before = set(threading.enumerate())
    with BackgroundServer(hello_app()) as server:
        assert server.url.startswith("http://127.0.0.1:")
        answer = httpx.get(server.url + "/").json()
    assert answer == {"thread": "double-server"}
    assert set(threading.enumerate()) == before


def test_call_runs_a_function_in_the_server_thread() -> None:
    """call(fn) runs fn on the server's loop and returns its result."""
    with BackgroundServer(hello_app()) as server:
        assert server.call(lambda: threading.current_thread().name) == "double-server"


def test_call_hands_back_the_functions_error() -> None:
    """An exception raised by fn in the server thread is raised in the caller."""
    with BackgroundServer(hello_app()) as server, pytest.raises(ZeroDivisionError):
        server.call(lambda: 1 // 0)


def test_start_reports_a_port_that_cannot_be_bound() -> None:
    """start() raises when the port is taken, instead of leaving a dead thread."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = BackgroundServer(hello_app(), port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="failed to start"):
            server.start()


def test_stop_does_not_wait_for_a_hanging_handler() -> None:
    """stop() cancels an in-flight hang after the short shutdown timeout."""
    jellyfin = JellyfinDouble("key", USER, "server")
    jellyfin.hang_rate, jellyfin.hang_seconds = 1.0, 30.0
    server = BackgroundServer(jellyfin.app())
    server.start()
    headers = {"Authorization": 'MediaBrowser Token="key"'}
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url + "/Items", params={"userId": USER}, headers=headers, timeout=0.2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
