"""Ports out of process by configuration only: a server whose loader and store are
grpc:// URLs pointing at another server (a sidecar), walked through the SDK."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.support.servers import flow_server
from trellis.clients import Client
from trellis.domain import ActionType, State, StepResult, ToolResult
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig

BOUND = 30.0


def texts(step: StepResult) -> str:
    return "".join(str(a.payload) for a in step.render.actions if a.type is ActionType.RENDER_CONTENT)


async def test_a_server_with_remote_loader_and_store(quiz: Path) -> None:
    async with flow_server(quiz, internal_listen="127.0.0.1:0") as sidecar:
        # The graph is public (GraphLoader on the sidecar's port), its store internal.
        loader = f"grpc://127.0.0.1:{sidecar.port}"
        store = f"grpc://127.0.0.1:{sidecar.internal_port}"
        front = TrellisServer(ServerConfig(listen="127.0.0.1:0", loader=loader, store=store))
        await front.start()
        try:
            async with (
                Client(f"127.0.0.1:{front.port}") as client,
                Client(f"127.0.0.1:{sidecar.port}") as behind,
            ):
                step = await client.sessions.start("via-front")
                assert "Who are you?" in texts(step)
                step = await client.sessions.navigate("via-front", "Fay")
                call = step.render.tool_call()
                assert call is not None and call.name == "lookup"
                # The state lives in the sidecar's store.
                stored = await behind.sessions.get("via-front")
                assert stored.state.current_node_id == "lookup" and stored.state.context["name"] == "Fay"
                assert stored.state.revision == step.state.revision

                # An edit of the sidecar's flow reaches the front server through the remote watch.
                (quiz / "done.md").write_text("---\n---\nFarewell {{ .name }}.\n", encoding="utf-8")
                async with asyncio.timeout(BOUND):
                    while True:
                        rendered = await client.engine.render(State.new("probe", "done"))
                        if "Farewell" in str(rendered.actions[0].payload):
                            break
                        await asyncio.sleep(0.1)
                step = await client.sessions.navigate("via-front", ToolResult(call.id, "reloaded"))
                assert step.terminal and "Farewell Fay." in texts(step)
        finally:
            await front.stop(grace=1.0)


async def test_a_tool_routed_to_a_dispatcher_sidecar(quiz: Path, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "start.md").write_text("---\n---\nthe sidecar's own flow\n", encoding="utf-8")
    script = "import json, os\nprint('looked up ' + json.loads(os.environ['TRELLIS_ARGS'])['who'])\n"
    (tools / "lookup.py").write_text(script, encoding="utf-8")
    registry = f"tools:\n  - name: lookup\n    command: {sys.executable!r}\n    args: ['lookup.py']\n"
    (tools / "tools.yaml").write_text(registry, encoding="utf-8")
    async with flow_server(tools, internal_listen="127.0.0.1:0") as sidecar:
        route = f"grpc://127.0.0.1:{sidecar.internal_port}?tools=lookup&timeout=20s"
        async with flow_server(quiz, tool_routes={"lookup": route}) as front:
            async with Client(f"127.0.0.1:{front.port}") as client:
                await client.sessions.start("routed")
                step = await client.sessions.navigate("routed", "Gus")
        # The front server dispatched the call to the sidecar and went on to the end.
        assert step.terminal and "Bye Gus, you are looked up Gus." in texts(step)
