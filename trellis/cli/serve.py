"""``trellis serve``: run the gRPC server. Importable without the server extra: the
server itself is imported when the command runs."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from trellis.cli.common import CliError, import_extra
from trellis.errors import ConfigError, TrellisError
from trellis.server.config import DEFAULT_LISTEN, load_config, parse_routes

COMMAND = "serve"

DESCRIPTION = """\
Serve the flow in DIR over gRPC: the Engine (stateless), Sessions (durable) and
GraphLoader services, plus grpc.health.v1 health checks and server reflection
(grpcurl works without the .proto files). StateStore and ActionDispatcher, which
replicas and sidecars use, are served only on --internal-listen, if given.
With --http-listen the same public services are also served over Connect
(curl -d JSON, browsers) with session events as server-sent events; add
--inspector for a web page there that draws the flow and walks its sessions.

With no other option it runs embedded, nothing else to start: the directory
loader with hot reload, sessions in memory, local locks and the process tools
of DIR/tools.yaml. Each port can be switched with a URL:

  --loader      dir:PATH | memory: | grpc://HOST:PORT
                | etcd:GRAPH | etcd://HOST:PORT[,HOST:PORT...]/PREFIX?graph=GRAPH
  --store       memory: | file:PATH | grpc://HOST:PORT
                | etcd: | etcd://HOST:PORT[,HOST:PORT...]/PREFIX
  --locker      local: | etcd: | etcd://HOST:PORT[,...]/PREFIX
  --dispatcher  process:PATH/tools.yaml | grpc://HOST:PORT | unix:///PATH
                (--route TOOL=URL per tool; --sidecar URL: a sidecar serving what it lists)

Settings come from a YAML file (--config or TRELLIS_CONFIG), then TRELLIS_*
environment variables (TRELLIS_STORE, TRELLIS_LISTEN, TRELLIS_TOKEN, ...), then
these flags; later sources win. SIGTERM or Ctrl-C stops accepting calls and
lets in-flight steps finish within the grace period. See docs/server.md.
"""

EPILOG = """\
examples:
  trellis serve examples/tour
  trellis serve examples/tour --store file:.trellis/sessions --listen 127.0.0.1:6000
  trellis serve --loader 'etcd://127.0.0.1:2379/trellis?graph=tour' \
      --store etcd://127.0.0.1:2379/trellis --locker etcd://127.0.0.1:2379/trellis
  trellis serve examples/tour --metrics-listen 127.0.0.1:9464 --token-file secrets/token
  trellis serve examples/tour --internal-listen 127.0.0.1:50061
  trellis serve examples/tour --http-listen 127.0.0.1:8080
  trellis serve examples/tour --http-listen 127.0.0.1:8080 --inspector
  grpcurl -plaintext 127.0.0.1:50051 list
"""

# flag dest -> configuration key, for the flags whose value goes straight into the config
_PLAIN = (
    "listen",
    "internal_listen",
    "http_listen",
    "inspector",
    "loader",
    "store",
    "locker",
    "dispatcher",
    "entry_node",
    "default_error_node",
    "no_default_error_node",
    "html",
    "lock_ttl",
    "metrics_listen",
    "tracing",
    "log_level",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "token_file",
    "signing_key_file",
    "store_keys_file",
    "max_message_bytes",
    "max_input_bytes",
    "max_context_bytes",
    "max_watch_streams",
    "shutdown_grace",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="serve a flow over gRPC (engine, sessions, loader, store, dispatcher)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dir", metavar="DIR", nargs="?", help="the flow directory (optional if --loader is set)"
    )
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file (default: $TRELLIS_CONFIG)")
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help=f"address to serve on (default {DEFAULT_LISTEN}; port 0 = any)"
    )
    parser.add_argument(
        "--internal-listen",
        metavar="HOST:PORT",
        help="also serve StateStore and ActionDispatcher, for replicas and sidecars, on this "
        "(loopback) address; they are never served on --listen (default: not served)",
    )
    parser.add_argument(
        "--http-listen",
        metavar="HOST:PORT",
        help="also serve the public services over Connect (curl, browsers: JSON over HTTP) and "
        "session events as server-sent events on this address (default: not served; docs/http.md)",
    )
    parser.add_argument(
        "--inspector",
        action="store_true",
        default=None,
        help="serve a web page at http://HTTP-LISTEN/inspector/ that draws the flow and walks its "
        "sessions through the public API (needs --http-listen; default: not served; docs/inspector.md)",
    )
    ports = parser.add_argument_group("ports (URL per port)")
    ports.add_argument("--loader", metavar="URL", help="graph loader (default dir:DIR)")
    ports.add_argument("--store", metavar="URL", help="session store (default memory:)")
    ports.add_argument("--locker", metavar="URL", help="session locks (default local:)")
    ports.add_argument(
        "--dispatcher", metavar="URL", help="default tool dispatcher (default process:DIR/tools.yaml)"
    )
    ports.add_argument(
        "--route",
        metavar="TOOL=URL",
        action="append",
        default=None,
        help="send calls of TOOL to another dispatcher (repeatable)",
    )
    ports.add_argument(
        "--sidecar",
        metavar="URL",
        action="append",
        default=None,
        help="a dispatcher sidecar (grpc://HOST:PORT or unix:///PATH) serving the tools its "
        "ListTools answer lists, re-read when it restarts (repeatable)",
    )
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--entry",
        dest="entry_node",
        metavar="NODE",
        help="entry node ID (default: start, main, index or the flow directory's name, whichever exists)",
    )
    engine.add_argument(
        "--error-node",
        dest="default_error_node",
        metavar="NODE",
        help="where failed or denied tools go when their node names no target "
        "(default: the flow's 'error' node if it has one)",
    )
    engine.add_argument(
        "--no-error-node",
        dest="no_default_error_node",
        action="store_true",
        default=None,
        help="no default error node, even when the flow has an 'error' node",
    )
    engine.add_argument(
        "--html",
        action="store_true",
        default=None,
        help="HTML-escape the values templates interpolate (for flows rendered into web pages)",
    )
    engine.add_argument("--lock-ttl", type=str, metavar="DURATION", help="session lock TTL (default 30s)")
    ops = parser.add_argument_group("operations")
    ops.add_argument("--metrics-listen", metavar="HOST:PORT", help="serve Prometheus metrics over HTTP here")
    ops.add_argument(
        "--tracing",
        action="store_true",
        default=None,
        help="export OpenTelemetry traces as the OTEL_* variables say (needs trellis-flow[otel])",
    )
    ops.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    ops.add_argument(
        "--shutdown-grace", metavar="DURATION", help="time in-flight calls get on shutdown (default 10s)"
    )
    ops.add_argument(
        "--max-message-bytes", type=int, metavar="N", help="gRPC message size limit (default 4 MiB)"
    )
    ops.add_argument("--max-input-bytes", type=int, metavar="N", help="text input limit (default 4096)")
    ops.add_argument(
        "--max-context-bytes", type=int, metavar="N", help="context JSON limit (default 256 KiB)"
    )
    ops.add_argument(
        "--max-watch-streams",
        type=int,
        metavar="N",
        help="concurrent GraphLoader.Watch and Sessions.Watch streams (default 256)",
    )
    sec = parser.add_argument_group("security")
    sec.add_argument("--tls-cert", metavar="FILE", help="server certificate (PEM); enables TLS")
    sec.add_argument("--tls-key", metavar="FILE", help="server private key (PEM)")
    sec.add_argument(
        "--tls-client-ca", metavar="FILE", help="require client certificates signed by this CA (mTLS)"
    )
    sec.add_argument(
        "--token-file", metavar="FILE", help="require 'authorization: Bearer <token>' (one token a line)"
    )
    sec.add_argument(
        "--signing-key-file",
        metavar="FILE",
        help="sign the states the Engine service returns and refuse altered ones (HMAC-SHA256)",
    )
    sec.add_argument(
        "--store-keys-file",
        metavar="FILE",
        help="encrypt sessions at rest (AES-256-GCM): KEY_ID:BASE64 lines, the first is active",
    )
    parser.set_defaults(handler=handle)


def flags_from(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {name: getattr(args, name, None) for name in _PLAIN}
    if args.dir is not None:
        flags["flow_dir"] = args.dir
    if args.route:
        flags["tool_routes"] = parse_routes(",".join(args.route), "--route")
    if args.sidecar:
        flags["sidecars"] = list(args.sidecar)
    return flags


def handle(args: argparse.Namespace) -> int:
    try:
        config = load_config(file=args.config, flags=flags_from(args))
    except TrellisError as exc:
        raise CliError(exc.message, 2) from None
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    # --log-level applies to trellis' own loggers; libraries (grpc, asyncio) stay at
    # warnings and above so that debug output is about the flow, not the transport.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("trellis").setLevel(level)
    _check_free(config.listen, "listen")
    if config.metrics_listen:
        _check_free(config.metrics_listen, "metrics-listen")
    if config.http_listen:
        _check_free(config.http_listen, "http-listen")
    try:
        with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
            runner.run(_serve(config))
    except TrellisError as exc:
        raise CliError(exc.message) from None
    except RuntimeError as exc:
        # grpc refuses a port it cannot bind with a bare RuntimeError; the check above
        # catches the usual case first, this one a port taken in between.
        if "Failed to bind" in str(exc):
            raise CliError(_busy(config.listen, "listen")) from None
        raise
    return 0


def _busy(address: str, option: str) -> str:
    return f"cannot serve on {address} ({option}): address already in use; is another server running there?"


def _check_free(address: str, option: str) -> None:
    """Refuse an address another process holds before grpc tries it: grpc's own failure
    is a C-core log line and a traceback. Port 0 and unresolvable hosts are left to the
    server, which reports them itself."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # the server sets SO_REUSEADDR too: a port in TIME_WAIT is not "in use"
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise CliError(_busy(address, option)) from None


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The server's event loop (``event_loop``); None: asyncio's own, the default. uvloop
    is opt-in: bench/etcd_steps.py found it no steady gain, and with it a process tool
    run by a server replica died of SIGSEGV in tests/etcd_system (fine on asyncio)."""
    if choice == "asyncio":
        return None
    if choice != "uvloop":
        raise ConfigError(f"event_loop must be asyncio or uvloop, got {choice!r}")
    try:
        import uvloop
    except ImportError:
        raise ConfigError("event_loop is uvloop but uvloop is not installed") from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(config: Any) -> None:
    app = import_extra("trellis.server.app", "server", "'trellis serve'")
    server = app.TrellisServer(config)
    port = await server.start()
    host = config.listen.rpartition(":")[0]
    metrics = (
        f" (metrics on {config.metrics_listen.rpartition(':')[0]}:{server.metrics_port})"
        if server.metrics_port
        else ""
    )
    print(f"trellis: serving on {host}:{port}{metrics}", file=sys.stderr, flush=True)
    if server.http_port:
        http = f"{config.http_listen.rpartition(':')[0]}:{server.http_port}"
        print(f"trellis: HTTP (Connect, server-sent events) on {http}", file=sys.stderr, flush=True)
        if config.inspector:
            scheme = "https" if config.tls_cert else "http"
            print(f"trellis: inspector on {scheme}://{http}/inspector/", file=sys.stderr, flush=True)
    if server.internal_port:
        internal = f"{config.internal_listen.rpartition(':')[0]}:{server.internal_port}"
        print(f"trellis: internal services on {internal}", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Future[None]] = []

    def on_signal() -> None:
        # The first signal drains gracefully; a second one stops without waiting.
        stopping.append(asyncio.ensure_future(server.stop_now() if stopping else server.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await server.wait()
