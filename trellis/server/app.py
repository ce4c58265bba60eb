"""The gRPC server: servicers over the composed ports, health, reflection, security,
metrics, hot reload and graceful shutdown.

Transport settings (also in docs/server.md), chosen on purpose:

* max message size: ``max_message_bytes`` (default 4 MiB, gRPC's own default made
  explicit) both ways; contexts and inputs have tighter limits of their own.
* keepalive: the server pings an idle connection every ``keepalive_time`` (60 s)
  and drops it when no answer comes within ``keepalive_timeout`` (20 s), so dead
  Watch streams are noticed; clients may ping every 10 s, also without calls in
  flight (long-lived Watch clients behind NATs need that).
* SO_REUSEPORT is off: a second server on a busy port fails instead of silently
  sharing it.

Two listeners (docs/server.md, "Exposure"): ``listen`` serves what clients use
(Engine, Sessions, GraphLoader reads); ``internal_listen``, off unless set,
serves what replicas and sidecars use (StateStore, ActionDispatcher). Those two
trust their caller completely (a saved state is taken as is, any tool runs with
any arguments), so they are never on the public port. Both listeners have health,
reflection and the same token check and TLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from trellis.api.transport import server_credentials
from trellis.api.v1 import (
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    engine_pb2,
    engine_pb2_grpc,
    graph_pb2,
    graph_pb2_grpc,
    server_info_pb2,
    server_info_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    store_pb2,
    store_pb2_grpc,
)
from trellis.engine.follow import follow_graph
from trellis.errors import ConfigError, describe
from trellis.plugins import Probe
from trellis.ports.loader import GraphChange, Watchable
from trellis.server.compose import Composition, build_composition, reply_limits
from trellis.server.config import ServerConfig
from trellis.server.dispatcher_service import ActionDispatcherService
from trellis.server.draining import DrainingGate
from trellis.server.engine_service import EngineService
from trellis.server.graph_service import GraphLoaderService
from trellis.server.malformed import MalformedRequestInterceptor
from trellis.server.observe import Observer
from trellis.server.reflection import enable_reflection
from trellis.server.security import TokenInterceptor, load_tokens
from trellis.server.server_info_service import ServerInfoService, server_info
from trellis.server.sessions_service import SessionsService
from trellis.server.signing import StateSigner
from trellis.server.store_service import StateStoreService
from trellis.server.watch_streams import WatchStreams

LOG = logging.getLogger("trellis.server")

ENGINE = engine_pb2.DESCRIPTOR.services_by_name["Engine"].full_name
SESSIONS = sessions_pb2.DESCRIPTOR.services_by_name["Sessions"].full_name
GRAPH_LOADER = graph_pb2.DESCRIPTOR.services_by_name["GraphLoader"].full_name
DISPATCHER = dispatcher_pb2.DESCRIPTOR.services_by_name["ActionDispatcher"].full_name
STATE_STORE = store_pb2.DESCRIPTOR.services_by_name["StateStore"].full_name
SERVER_INFO = server_info_pb2.DESCRIPTOR.services_by_name["ServerInfo"].full_name

# Which backends each service needs to be SERVING.
SERVICE_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    ENGINE: ("loader",),
    SESSIONS: ("loader", "store", "locker", "dispatcher"),
    GRAPH_LOADER: ("loader",),
    DISPATCHER: ("dispatcher",),
    STATE_STORE: ("store",),
    SERVER_INFO: (),
}
PROBE_TIMEOUT = 2.0
CLIENT_PING_MIN_INTERVAL_MS = 10_000


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_internal_listen(config: ServerConfig, tokens: list[str]) -> None:
    """The internal services on a reachable address only behind a credential."""
    host, _port = split_host_port(config.internal_listen, "internal_listen")
    if not _is_loopback(host) and not tokens and not config.tls_client_ca:
        raise ConfigError(
            f"internal_listen: {config.internal_listen!r} is not a loopback address; StateStore "
            "and ActionDispatcher trust their callers, so serve them there only with a token "
            "(token_file) or client certificates (tls_client_ca)"
        )


def split_host_port(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{what}: {address!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", int(config.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", CLIENT_PING_MIN_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


def signer_from(config: ServerConfig) -> StateSigner | None:
    key = config.signing_key.encode()
    if config.signing_key_file:
        try:
            with open(config.signing_key_file, "rb") as handle:
                key = handle.read().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read signing key file '{config.signing_key_file}': {exc.strerror}"
            ) from None
    return StateSigner(key) if key else None


class TrellisServer:
    """One server process's gRPC endpoint. ``start`` then ``wait`` / ``stop``."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        composition: Composition | None = None,
        observer: Observer | None = None,
        tracer: Any = None,
    ):
        """``tracer``: an OpenTelemetry Tracer to trace with when ``config.tracing`` is on
        (tests, embedders; the composition given must be assembled with it too); by
        default one is made from the OTEL_* variables (trellis.server.tracing)."""
        self.config = config
        self.observer = observer or Observer()
        self.tracer = tracer
        self._tracing: Any = None  # the trellis.server.tracing.Tracing this server made
        self.composition = composition
        self._owns_composition = composition is None
        self.port = 0
        self.internal_port = 0
        self.http_port = 0
        self._http: Any = None  # trellis.server.http.gateway.HttpGateway, with http_listen
        self._server: Any = None
        self._internal: Any = None
        self._health = health.aio.HealthServicer()
        self._internal_health = health.aio.HealthServicer()
        self._tasks: list[asyncio.Task[None]] = []
        # False while hot reload has no open graph watch: the loader then counts as down.
        self._graph_watch_ok = True
        self._metrics: Any = None
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None
        self._services: list[str] = []
        self._gate = DrainingGate()
        self._internal_services: list[str] = []

    @property
    def internal_services(self) -> list[str]:
        """The services of the internal listener (none when it is off)."""
        return list(self._internal_services)

    async def start(self) -> int:
        """Build the ports, bind and start serving; returns the bound port."""
        config = self.config
        # Check everything that can be wrong in the configuration before binding.
        signer = signer_from(config)
        tokens = load_tokens(config.token_file, config.token)
        credentials = None
        if config.tls_cert or config.tls_key or config.tls_client_ca:
            credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        host, _port = split_host_port(config.listen, "listen")
        if config.internal_listen:
            check_internal_listen(config, tokens)
        if config.tracing and self.tracer is None:
            self._tracing = make_tracing()
            self.tracer = self._tracing.tracer
        if self.composition is None:
            try:
                tracer = self.tracer if config.tracing else None
                self.composition = await build_composition(config, self.observer, tracer)
            except BaseException:
                self._shutdown_tracing()
                raise
        ports = self.composition
        try:
            # The gate first: once stopping, a call is refused before anything else looks at it.
            interceptors: list[Any] = [self._gate]
            if config.tracing:
                # Before the token check, so a refused call is traced too (the token never is).
                from trellis.adapters.grpc.channel import set_call_metadata
                from trellis.server.tracing import TracingInterceptor, call_metadata

                interceptors.append(TracingInterceptor(self.tracer))
                set_call_metadata(call_metadata)
            if tokens:
                interceptors.append(TokenInterceptor(tokens))
            interceptors.append(MalformedRequestInterceptor())
            server = grpc.aio.server(options=server_options(config), interceptors=interceptors)
            limits = reply_limits(config)
            watch_streams = WatchStreams(config.max_watch_streams)
            public: list[tuple[Any, Any]] = [
                (
                    engine_pb2_grpc.add_EngineServicer_to_server,
                    EngineService(ports.engine, self.observer, limits, signer),
                ),
                (
                    sessions_pb2_grpc.add_SessionsServicer_to_server,
                    SessionsService(ports.sessions, self.observer, limits, watch_streams),
                ),
                (
                    graph_pb2_grpc.add_GraphLoaderServicer_to_server,
                    GraphLoaderService(ports.loader, self.observer, watch_streams),
                ),
            ]
            self._services = [ENGINE, SESSIONS, GRAPH_LOADER, SERVER_INFO]
            info = server_info(
                config,
                limits,
                self._services,
                signing=signer is not None,
                hot_reload=isinstance(ports.loader, Watchable),
                tool_dispatch=ports.dispatcher is not None,
            )
            info_servicer = ServerInfoService(info, self.observer)
            public.append((server_info_pb2_grpc.add_ServerInfoServicer_to_server, info_servicer))
            for add, servicer in public:
                add(servicer, server)
            self.port = _bind(server, self._health, self._services, config.listen, "listen", credentials)
            internal = None
            if config.internal_listen:
                internal = grpc.aio.server(options=server_options(config), interceptors=interceptors)
                store_pb2_grpc.add_StateStoreServicer_to_server(
                    StateStoreService(ports.store, self.observer, limits), internal
                )
                self._internal_services = [STATE_STORE]
                if ports.dispatcher is not None:
                    dispatcher_pb2_grpc.add_ActionDispatcherServicer_to_server(
                        ActionDispatcherService(ports.dispatcher, self.observer), internal
                    )
                    self._internal_services.append(DISPATCHER)
                self.internal_port = _bind(
                    internal,
                    self._internal_health,
                    self._internal_services,
                    config.internal_listen,
                    "internal_listen",
                    credentials,
                )
            if config.http_listen:
                # The same servicer objects behind the same interceptors (docs/http.md).
                from trellis.server.http.listener import start_http

                self._http = await start_http(config, interceptors, public)
                self.http_port = self._http.port
            await self._probe_all()
            await server.start()
            self._server = server
            if internal is not None:
                await internal.start()
                self._internal = internal
            self._start_background()
            self._start_metrics()
        except BaseException:
            if self._http is not None:
                await self._http.stop()
            if self._owns_composition:
                await ports.aclose()
            self._shutdown_tracing()
            raise
        LOG.info(
            "trellis server listening on %s (port %d%s%s)",
            host, self.port, ", TLS" if credentials is not None else "", ", token required" if tokens else "",
        )
        if self._http is not None:
            LOG.info("HTTP (Connect, server-sent events) on %s (port %d)", config.http_listen, self.http_port)
        if self._internal is not None:
            LOG.info(
                "internal services (%s) on %s (port %d)",
                ", ".join(self._internal_services),
                config.internal_listen.rpartition(":")[0],
                self.internal_port,
            )
        return self.port

    # --- background: hot reload and health probes ------------------------------------

    def _start_background(self) -> None:
        assert self.composition is not None
        loop = asyncio.get_running_loop()
        if isinstance(self.composition.loader, Watchable):
            self._tasks.append(loop.create_task(self._follow_graph(), name="trellis-server-reload"))
        if self.composition.probes or isinstance(self.composition.loader, Watchable):
            self._tasks.append(loop.create_task(self._probe_loop(), name="trellis-server-probes"))
        for run in self.composition.background:
            self._tasks.append(loop.create_task(run(), name=f"trellis-server-{run.__qualname__}"))

    async def _follow_graph(self) -> None:
        assert self.composition is not None
        loader = self.composition.loader
        assert isinstance(loader, Watchable)

        def changed(change: GraphChange) -> None:
            self.observer.reloads.inc()
            LOG.info("graph changed: %s", ", ".join(sorted(change.node_ids)) or "everything (full reload)")

        def watching(ok: bool) -> None:
            self._graph_watch_ok = ok  # the next probe round reports it

        await follow_graph(self.composition.engine, loader, on_change=changed, on_watching=watching)

    async def _probe(self, name: str, probe: Probe) -> bool:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await probe()
            return True
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            LOG.warning("backend %s unreachable: no answer to its probe within %.1fs", name, PROBE_TIMEOUT)
            return False
        except Exception as exc:
            LOG.warning("backend %s unreachable: %s", name, describe(exc))
            return False

    async def _probe_all(self) -> None:
        assert self.composition is not None
        probes = self.composition.probes
        results = dict(
            zip(probes, await asyncio.gather(*(self._probe(n, p) for n, p in probes.items())), strict=True)
        )
        results["loader"] = results.get("loader", True) and self._graph_watch_ok
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for checker, services in (
            (self._health, self._services),
            (self._internal_health, self._internal_services),
        ):
            for service in services:
                ok = all(results.get(dep, True) for dep in SERVICE_DEPENDENCIES[service])
                await checker.set(service, serving if ok else not_serving)
            await checker.set("", serving)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_probe_interval)
            await self._probe_all()

    def _start_metrics(self) -> None:
        if not self.config.metrics_listen:
            return
        from prometheus_client import start_http_server

        host, port = split_host_port(self.config.metrics_listen, "metrics_listen")
        try:
            self._metrics = start_http_server(port, host, registry=self.observer.registry)
        except OSError as exc:
            raise ConfigError(
                f"metrics_listen: cannot bind {self.config.metrics_listen}: {exc.strerror}"
            ) from None

    @property
    def metrics_port(self) -> int:
        return int(self._metrics[0].server_port) if self._metrics else 0

    # --- shutdown ---------------------------------------------------------------------

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls (UNAVAILABLE, retryable), let in-flight steps finish within
        ``grace`` seconds (default: shutdown_grace), cancel the rest (their locks are
        released by the cancelled steps) and open streams, then close every port. Safe to
        call more than once."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def stop_now(self) -> None:
        """Cancel in-flight calls at once (a second SIGTERM during a graceful stop)."""
        for server in (self._server, self._internal):
            if server is not None:
                await server.stop(0)
        if self._http is not None:
            await self._http.stop()
        await self.stop()

    async def _stop(self, grace: float | None) -> None:
        grace = self.config.shutdown_grace if grace is None else grace
        LOG.info("shutting down: finishing in-flight calls (grace %.1fs)", grace)
        self._gate.close()
        await self._health.enter_graceful_shutdown()
        await self._internal_health.enter_graceful_shutdown()
        # gRPC's own graceful stop would drop calls arriving meanwhile (trellis.server.draining):
        # drain through the gate (it guards both listeners), then stop gRPC with nothing left
        # worth waiting for.
        if not await self._gate.wait_idle(grace):
            LOG.warning(
                "shutting down: %d call(s) still running after the grace period are cancelled",
                self._gate.in_flight,
            )
        servers = [server for server in (self._server, self._internal) if server is not None]
        await asyncio.gather(*(server.stop(0) for server in servers))
        if self._http is not None:
            await self._http.stop()  # its open event streams end here, like gRPC's watches
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._metrics is not None:
            httpd, _thread = self._metrics
            # shutdown() blocks until the serving thread notices; keep it off the loop.
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
        if self._owns_composition and self.composition is not None:
            await self.composition.aclose()
        self._shutdown_tracing()
        self._stopped.set()
        LOG.info("server stopped")

    async def wait(self) -> None:
        await self._stopped.wait()

    def _shutdown_tracing(self) -> None:
        """Export the spans still buffered, if this server made its tracer provider."""
        if self._tracing is not None:
            self._tracing.shutdown()
            self._tracing = None


def make_tracing(default_service: str = "trellis") -> Any:
    """A trellis.server.tracing.Tracing from the OTEL_* variables; ConfigError naming the
    extra to install when OpenTelemetry is missing."""
    try:
        from trellis.server.tracing import tracing_from_env
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"tracing: OpenTelemetry is not installed (missing module {exc.name!r}): "
            "pip install 'trellis-flow[otel]'"
        ) from None
    return tracing_from_env(default_service)


def _bind(
    server: Any, checker: Any, services: list[str], address: str, what: str, credentials: Any
) -> int:
    """Health and reflection for ``services`` on ``server``, bound to ``address``; the port."""
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    enable_reflection([*services, health.SERVICE_NAME], server)
    if credentials is not None:
        port = int(server.add_secure_port(address, credentials))
    else:
        port = int(server.add_insecure_port(address))
    if not port:
        raise ConfigError(f"{what}: cannot bind {address}")
    return port
