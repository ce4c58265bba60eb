"""SidecarServer: one gRPC endpoint for a sidecar's service (ActionDispatcher or
GraphLoader), with health, reflection, the server's token check and TLS, on TCP
(``HOST:PORT``) or a Unix domain socket (``unix:///PATH``; in Kubernetes a socket in an
``emptyDir`` volume shared by the pod's containers).

Stopping drains: health turns NOT_SERVING, new calls are refused, running ones (a tool
in the middle of its work) get ``grace`` seconds to finish, then are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from trellis.api import DEFAULT_MAX_MESSAGE_BYTES
from trellis.api.transport import server_credentials
from trellis.api.v1 import dispatcher_pb2, dispatcher_pb2_grpc, graph_pb2, graph_pb2_grpc
from trellis.errors import ConfigError
from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.loader import GraphLoader
from trellis.server.dispatcher_service import ActionDispatcherService
from trellis.server.graph_service import GraphLoaderService
from trellis.server.observe import Observer
from trellis.server.security import TokenInterceptor, load_tokens

LOG = logging.getLogger("trellis.sidecar")

DISPATCHER = dispatcher_pb2.DESCRIPTOR.services_by_name["ActionDispatcher"].full_name
GRAPH_LOADER = graph_pb2.DESCRIPTOR.services_by_name["GraphLoader"].full_name
DEFAULT_GRACE = 10.0


@dataclass(slots=True)
class SidecarOptions:
    listen: str = "127.0.0.1:50070"  # HOST:PORT or unix:///PATH
    token_file: str = ""
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    grace: float = DEFAULT_GRACE
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # OpenTelemetry spans of the calls, continuing the caller's trace (trellis.server.tracing);
    # on when TRELLIS_TRACING is true, so a sidecar script needs no flag for it.
    tracing: bool = field(default_factory=lambda: tracing_requested(os.environ))


def tracing_requested(environ: Mapping[str, str]) -> bool:
    return environ.get("TRELLIS_TRACING", "").strip().lower() in ("1", "true", "yes", "on")


def socket_path(listen: str) -> Path | None:
    """The file of a ``unix:`` address (None for TCP)."""
    if not listen.startswith("unix:"):
        return None
    rest = listen[len("unix:"):]
    return Path(rest[2:] if rest.startswith("//") else rest)


class SidecarServer:
    def __init__(
        self,
        options: SidecarOptions,
        *,
        dispatcher: ActionDispatcher | None = None,
        loader: GraphLoader | None = None,
        observer: Observer | None = None,
    ) -> None:
        if (dispatcher is None) == (loader is None):
            raise ValueError("a sidecar serves a dispatcher or a loader")
        self.options = options
        self.observer = observer or Observer()
        self._dispatcher = dispatcher
        self._loader = loader
        self._health = health.aio.HealthServicer()
        self._server: Any = None
        self._stopping: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._tracing: Any = None  # trellis.server.tracing.Tracing, with options.tracing
        self.port = 0

    @property
    def address(self) -> str:
        """Where clients connect: ``HOST:PORT`` with the bound port, or the ``unix:`` address."""
        if socket_path(self.options.listen) is not None:
            return self.options.listen
        host = self.options.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> str:
        options = self.options
        tokens = load_tokens(options.token_file, options.token)
        credentials = None
        if options.tls_cert or options.tls_key or options.tls_client_ca:
            credentials = server_credentials(options.tls_cert, options.tls_key, options.tls_client_ca)
        path = socket_path(options.listen)
        if path is not None:
            if not path.parent.is_dir():
                raise ConfigError(f"listen: the directory of {path} does not exist")
            # A socket file left by a sidecar that was killed would make the bind fail.
            if path.is_socket():
                path.unlink()
        elif ":" not in options.listen:
            raise ConfigError(f"listen: {options.listen!r} is not HOST:PORT or unix:///PATH")
        interceptors: list[Any] = []
        if options.tracing:
            from trellis.server.app import make_tracing
            from trellis.server.tracing import TracingInterceptor

            self._tracing = make_tracing("trellis-sidecar")
            interceptors.append(TracingInterceptor(self._tracing.tracer))
        if tokens:
            interceptors.append(TokenInterceptor(tokens))
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", options.max_message_bytes),
                ("grpc.max_send_message_length", options.max_message_bytes),
                ("grpc.so_reuseport", 0),
                # The same keepalive terms as the trellis server: its clients (a server's
                # RemoteDispatcher) ping every 30 s, also between calls, and must not be
                # sent away with "too many pings".
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.http2.max_pings_without_data", 0),
            ],
            interceptors=interceptors,
        )
        if self._dispatcher is not None:
            dispatcher_pb2_grpc.add_ActionDispatcherServicer_to_server(
                ActionDispatcherService(self._dispatcher, self.observer), server
            )
            service = DISPATCHER
        else:
            assert self._loader is not None
            graph_pb2_grpc.add_GraphLoaderServicer_to_server(
                GraphLoaderService(self._loader, self.observer), server
            )
            service = GRAPH_LOADER
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection([service, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        try:
            if credentials is not None:
                self.port = server.add_secure_port(options.listen, credentials)
            else:
                self.port = server.add_insecure_port(options.listen)
        except RuntimeError as exc:
            raise ConfigError(f"listen: cannot bind {options.listen}: {exc}") from None
        if not self.port:
            raise ConfigError(f"listen: cannot bind {options.listen}")
        await server.start()
        self._server = server
        for name in ("", service):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        LOG.info(
            "sidecar serving %s on %s%s%s", service, self.address,
            ", TLS" if credentials is not None else "", ", token required" if tokens else "",
        )
        return self.address

    async def stop(self, grace: float | None = None) -> None:
        """Drain (see the module doc); safe to call more than once."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(self.options.grace if grace is None else grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float) -> None:
        LOG.info("sidecar draining: running calls get %.1fs to finish", grace)
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        path = socket_path(self.options.listen)
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
        if self._tracing is not None:
            self._tracing.shutdown()  # exports the spans still buffered
            self._tracing = None
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def run_until_signalled(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Start, report the address, serve until SIGTERM/SIGINT, drain. A second signal
        stops at once."""
        address = await self.start()
        if on_ready is not None:
            on_ready(address)
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Future[None]] = []

        def on_signal() -> None:
            stopping.append(asyncio.ensure_future(self.stop(0 if stopping else None)))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await self.wait()


def announce(address: str) -> None:
    """The line a supervisor (or a test) waits for: where the sidecar listens."""
    print(f"trellis sidecar: serving on {address} (pid {os.getpid()})", flush=True)
