"""The MCP server of a flow: four tools that step sessions and three resources
that show the flow, over any SessionsPort.

Errors of a step (an unknown session, a refused input, a limit) come back as a
tool error naming the reason of the error table and its message, so the agent can
correct itself; the server keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, TextContent

from trellis.domain import JSONValue, Node, StepResult
from trellis.errors import TrellisError
from trellis.mcp.views import node_view, step_text, step_view
from trellis.mermaid import render_mermaid
from trellis.ports.sessions import SessionsPort
from trellis.server.config import DEFAULT_MAX_CONTEXT_BYTES

Inspect = Callable[[], Awaitable[Sequence[Node]]]

INSTRUCTIONS = """\
This server walks a trellis flow: a graph of nodes that say something, wait for
input, call tools and branch on conditions. Start a session with start_session
(any session ID you choose), then read what the step says and what it waits for,
and reply with answer (text, a choice's option, yes/no for a confirmation) or
signal (e.g. 'interrupt'). get_session shows a session without changing it. The
resources trellis://graph (Mermaid) and trellis://nodes describe the whole flow."""


def build_server(
    sessions: SessionsPort,
    inspect: Inspect,
    *,
    entry: str,
    name: str = "trellis",
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
) -> MCPServer:
    """An MCPServer whose tools step ``sessions`` and whose resources read ``inspect()``.
    ``max_context_bytes``: the largest context (as JSON) start_session accepts."""
    # WARNING: the SDK logs every session and request at INFO, noise on a terminal or in a pod log.
    server: MCPServer = MCPServer(name=name, instructions=INSTRUCTIONS, log_level="WARNING")

    async def start_session(session_id: str, context: dict[str, Any] | None = None) -> CallToolResult:
        """Start a session of the flow at its entry node, or return the session as it is
        when it exists already (the context is then ignored). `context` seeds the
        session's variables, e.g. {"name": "Ada"}."""
        seed: Mapping[str, JSONValue] | None = context
        size = len(orjson.dumps(context)) if context else 0
        if size > max_context_bytes:
            # The same bound the gRPC Sessions.Start puts on a context in a request.
            raise ToolError(f"INVALID_INPUT: context is {size} bytes, over the limit of {max_context_bytes}")
        return await _step(lambda: sessions.start(session_id, seed))

    async def answer(session_id: str, input: str) -> CallToolResult:
        """Answer what the session's current node asks: free text, one of the offered
        options, or yes/no for a confirmation. An empty string takes the default."""
        return await _step(lambda: sessions.navigate(session_id, input))

    async def signal(session_id: str, signal: str) -> CallToolResult:
        """Send a signal to the session, e.g. 'interrupt' or 'timeout'; the current node
        (or the flow's defaults) decides where it leads."""
        return await _step(lambda: sessions.signal(session_id, signal))

    async def get_session(session_id: str) -> CallToolResult:
        """Show the session's current node, what it says and waits for, and its context,
        without changing anything."""
        return await _step(lambda: sessions.get(session_id))

    for tool in (start_session, answer, signal, get_session):
        server.add_tool(tool, structured_output=False)

    @server.resource("trellis://graph", name="graph", mime_type="text/vnd.mermaid")
    async def graph() -> str:
        """The whole flow as a Mermaid flowchart."""
        return render_mermaid(await _nodes(inspect), entry=entry)

    @server.resource("trellis://nodes", name="nodes", mime_type="application/json")
    async def nodes() -> str:
        """Every node of the flow: its text, the input it waits for, where it leads."""
        return json.dumps({"entry": entry, "nodes": [node_view(n) for n in await _nodes(inspect)]})

    @server.resource("trellis://nodes/{node_id}", name="node", mime_type="application/json")
    async def node(node_id: str) -> str:
        """One node of the flow by its ID."""
        for candidate in await _nodes(inspect):
            if candidate.id == node_id:
                return json.dumps(node_view(candidate))
        raise ResourceError(f"the flow has no node {node_id!r}")

    return server


async def _step(call: Callable[[], Awaitable[StepResult]]) -> CallToolResult:
    try:
        result = await call()
    except TrellisError as exc:
        raise ToolError(f"{exc.reason}: {exc.message}") from exc
    view = step_view(result)
    return CallToolResult(content=[TextContent(type="text", text=step_text(view))], structured_content=view)


async def _nodes(inspect: Inspect) -> list[Node]:
    try:
        return sorted(await inspect(), key=lambda n: n.id)
    except TrellisError as exc:
        raise ResourceError(f"{exc.reason}: {exc.message}") from exc
