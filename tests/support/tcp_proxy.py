"""A TCP proxy on loopback that a test can cut and restore, to break a client's
connections to etcd (or a trellis server) while the server itself keeps running;
or that holds back the server's replies on the connections open at the time, so a
request is served while its reply is not delivered (a lost reply). Pointing
``target`` elsewhere sends new connections to another server."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._open: set[asyncio.StreamWriter] = set()  # client sides of open connections
        self._held: set[asyncio.StreamWriter] = set()  # client sides whose replies are held
        self._kept: dict[asyncio.StreamWriter, list[bytes]] = {}
        self.held_bytes = 0
        """Reply bytes kept back since the last ``hold`` (what a test waits for)."""

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (again, on the same port once it had one) and forward connections."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every forwarded connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        self._writers.clear()

    def hold(self) -> None:
        """From now on, keep back what the server sends on the connections open now (in
        order, nothing dropped: the HTTP/2 stream stays intact); new connections pass."""
        self._held = set(self._open)
        self.held_bytes = 0

    def release(self) -> None:
        """Deliver what was kept back and stop holding."""
        held, self._held = self._held, set()
        for writer in held:
            for chunk in self._kept.pop(writer, []):
                if not writer.is_closing():
                    writer.write(chunk)

    def drop_held(self) -> None:
        """Break the connections whose replies are held: what was kept back is lost, and
        the client sees its connection reset (as when the server died before answering)."""
        held, self._held = self._held, set()
        for writer in held:
            self._kept.pop(writer, None)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        self._open.add(writer)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer, reply=True)),
        ]
        self._pipes.update(pipes)
        for task in pipes:
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, reply: bool = False
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if reply and writer in self._held:
                    self._kept.setdefault(writer, []).append(data)
                    self.held_bytes += len(data)
                    continue
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)
        # A connection that ends loses what was kept back for it (the reply is lost).
        self._open.discard(writer)
        self._held.discard(writer)
        self._kept.pop(writer, None)
