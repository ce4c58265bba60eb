"""Running an MCP server: over stdio (the agent starts ``trellis mcp`` as a
subprocess) or over streamable HTTP (the agent connects to a URL)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn
from mcp.server.mcpserver import MCPServer

MCP_PATH = "/mcp"
MAX_REQUEST_BYTES = 1024 * 1024
"""Largest HTTP request body: a tool call is a few IDs, an input and a context
(256 KiB at most), so 1 MiB leaves room without letting a caller post gigabytes."""
MAX_HTTP_SESSIONS = 256
"""Concurrent MCP sessions over HTTP (each holds a little server state until it idles out)."""


async def serve_stdio(server: MCPServer) -> None:
    await server.run_stdio_async()


async def serve_http(server: MCPServer, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until cancelled; ``on_ready`` gets the URL once the socket listens
    (the port actually bound when ``port`` is 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        max_request_body_size=MAX_REQUEST_BYTES,
        max_sessions=MAX_HTTP_SESSIONS,
        host=host,
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    runner = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    original_startup = runner.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        on_ready(f"http://{shown}:{bound}{MCP_PATH}")

    runner.startup = startup  # type: ignore[method-assign]
    await runner.serve(sockets=[sock])
