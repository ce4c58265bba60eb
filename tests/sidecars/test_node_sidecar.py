"""The Node.js sidecar kit (clients/node/sidecar.js): its example sidecar, a real `node`
process, passes the conformance check and serves the tools of a flow, over TCP and a
Unix socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.requirements import missing
from tests.support.sidecar_processes import (
    NODE_DIR,
    conformance,
    node_ready,
    running,
    server,
    socket_dir,
    write_flow,
)
from trellis.clients import Client

GREETING_FLOW = {
    "start.md": "---\nwait: true\nsave_to: name\nto: greet\n---\nWho are you?\n",
    "greet.md": '---\ndo:\n  name: echo\n  args:\n    who: "{{ .name }}"\nsave_to: echoed\nto: nap\n---\n',
    "nap.md": "---\ndo:\n  name: sleep\n  args:\n    seconds: 0.01\nsave_to: nap\nto: done\n---\n",
    "done.md": "---\n---\nHello {{ .echoed.who }}, slept {{ .nap.slept }}s.\n",
}


@pytest.fixture(scope="module", autouse=True)
def node_modules() -> None:
    problem = node_ready()
    if problem:
        missing(problem)


def address_for(transport: str, sockets: object) -> str:
    return "127.0.0.1:0" if transport == "tcp" else f"unix://{sockets}/node.sock"


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_the_node_sidecar_passes_the_conformance_check(transport: str) -> None:
    async with socket_dir() as sockets:
        argv = ["node", "example-sidecar.js", address_for(transport, sockets)]
        async with running(argv, cwd=NODE_DIR) as sidecar:
            code, table = await conformance("dispatcher", sidecar.address)
    assert code == 0, table
    assert "8 passed, 0 failed, 0 skipped" in table, table


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_a_flow_runs_on_the_node_sidecars_tools(transport: str, tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", GREETING_FLOW)
    async with socket_dir() as sockets:
        argv = ["node", "example-sidecar.js", address_for(transport, sockets)]
        async with running(argv, cwd=NODE_DIR) as sidecar:
            async with server(flow, sidecars=[sidecar.url]) as target, Client(target) as client:
                # Served once the server has read the sidecar's tool list (at start).
                await client.sessions.start("n1")
                done = await client.sessions.navigate("n1", "Ada")
    assert done.terminal, done
    assert done.state.context["echoed"] == {"who": "Ada"}
    assert done.render.actions[-1].payload.strip() == "Hello Ada, slept 0.01s."
