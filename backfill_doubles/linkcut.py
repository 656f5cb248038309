"""A TCP relay whose link can be cut: one client's connection to a server (Agent Zero's to NATS) goes
through it, so a test can take that one link down while everything else stays connected.

`cut()` drops every relayed connection at once and refuses new ones (a client sees its connection
lost, then connection refused while it reconnects); `restore()` accepts again. It runs in the caller's
event loop (`async with LinkCut(port) as relay:`, then connect to `relay.url`).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

_HOST = "127.0.0.1"


class LinkCut:
    def __init__(self, target_port: int, scheme: str = "nats") -> None:
        self._target = target_port
        self._scheme = scheme
        self._server: asyncio.Server | None = None
        self._port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.cuts = 0

    @property
    def url(self) -> str:
        return f"{self._scheme}://{_HOST}:{self._port}"

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def restore(self) -> None:
        """Listen (again) on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(self._relay, _HOST, self._port, reuse_address=True)
            self._port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every relayed connection."""
        self.cuts += 1
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for pump in list(self._pumps):
            pump.cancel()
        if self._pumps:
            await asyncio.wait(set(self._pumps))

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(_HOST, self._target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update({client_writer, server_writer})
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            pump = asyncio.create_task(self._pump(reader, writer))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)

    async def __aenter__(self) -> LinkCut:
        await self.restore()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cut()
