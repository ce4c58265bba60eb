"""``trellis mcp``: a flow's sessions for AI agents, over the Model Context Protocol."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
from typing import Any

from trellis.cli.common import CliError, flow_dir, import_extra, run_async

COMMAND = "mcp"
TOKEN_ENV = "TRELLIS_TOKEN"

DESCRIPTION = """\
Serve a flow to an AI agent over the Model Context Protocol. The agent gets four
tools — start_session, answer, signal, get_session — that make durable steps, and
three resources — trellis://graph (Mermaid), trellis://nodes, trellis://nodes/{id}
— that describe the flow.

With DIR the flow runs here, as `trellis run` runs it: sessions in memory (or in
--store-dir), the tools of DIR/tools.yaml, hot reload. With --server the tools step
sessions kept by a trellis server instead (bearer token from TRELLIS_TOKEN).

By default the protocol runs over standard input and output (the agent starts this
command); --http serves streamable HTTP at http://HOST:PORT/mcp instead.
"""

EPILOG = """\
examples:
  trellis mcp examples/tour                              stdio, for an agent's MCP config
  trellis mcp examples/tour --http 127.0.0.1:8765        streamable HTTP on loopback
  trellis mcp examples/tour --store-dir .trellis/mcp     keep sessions across restarts
  trellis mcp --server 127.0.0.1:50051                   sessions of a running server
See docs/mcp.md.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="serve a flow's sessions to AI agents (Model Context Protocol)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", nargs="?", metavar="DIR", help="the flow directory (not with --server)")
    parser.add_argument("--server", metavar="HOST:PORT", help="step the sessions of this trellis server")
    parser.add_argument("--entry", default="start", help="entry node drawn in trellis://graph with --server")
    parser.add_argument(
        "--http", metavar="HOST:PORT", help="serve streamable HTTP on this address (port 0: any free port)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="let --http listen on a non-loopback address (MCP has no trellis token: put a proxy "
        "that authenticates in front)",
    )
    parser.add_argument("--store-dir", metavar="PATH", help="keep sessions on disk here (default: in memory)")
    parser.add_argument("--html", action="store_true", help="escape interpolated values for HTML")
    parser.add_argument("--no-error-node", action="store_true", help="no default error node")
    parser.set_defaults(handler=handle)


def parse_http(text: str, allow_remote: bool) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise CliError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765", 2)
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise CliError(
            f"--http {text!r} is not a loopback address: anyone who reaches it could step every "
            "session; add --allow-remote behind a proxy that authenticates",
            2,
        )
    return host, int(port_text)


def handle(args: argparse.Namespace) -> int:
    if bool(args.dir) == bool(args.server):
        raise CliError("give a flow directory DIR or --server HOST:PORT (one of them)", 2)
    http = parse_http(args.http, args.allow_remote) if args.http else None
    serving = import_extra("trellis.mcp.serving", "mcp", "'trellis mcp'")
    server_module = import_extra("trellis.mcp.server", "mcp", "'trellis mcp'")

    def ready(url: str) -> None:
        print(f"trellis mcp: serving MCP (streamable HTTP) at {url}", file=sys.stderr, flush=True)

    async def serve(server: Any) -> None:
        if http is None:
            await serving.serve_stdio(server)
        else:
            await serving.serve_http(server, http[0], http[1], ready)

    if args.server:
        client_module = import_extra("trellis.clients.client", "client", "'trellis mcp --server'")

        async def remote() -> int:
            async with client_module.Client(args.server, token=os.environ.get(TOKEN_ENV, "")) as client:
                server = server_module.build_server(client.sessions, client.engine.inspect, entry=args.entry)
                await serve(server)
            return 0

        return _run(remote)
    directory = flow_dir(args.dir)

    async def local() -> int:
        from trellis.adapters.file_store import FileStore
        from trellis.adapters.memory_store import MemoryStore
        from trellis.adapters.process_dispatcher import ProcessDispatcher
        from trellis.cli.project import open_flow
        from trellis.engine.follow import follow_graph
        from trellis.ports.store import StateStore
        from trellis.sessions import SessionManager

        flow = open_flow(directory, html=args.html, error_node=not args.no_error_node)
        store: StateStore = FileStore(args.store_dir) if args.store_dir else MemoryStore()
        dispatcher = ProcessDispatcher.from_file(flow.tools_file)
        manager = SessionManager(flow.engine, store, dispatcher=dispatcher)
        server = server_module.build_server(manager, flow.engine.inspect, entry=flow.entry)
        reload = asyncio.create_task(follow_graph(flow.engine, flow.loader))
        try:
            await serve(server)
        finally:
            reload.cancel()
            await flow.loader.aclose()
        return 0

    return _run(local)


def _run(main: Any) -> int:
    try:
        return int(run_async(main))
    except KeyboardInterrupt:
        return 130
