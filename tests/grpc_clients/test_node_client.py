"""The Node.js client (clients/node) walks a flow end to end against a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support import node
from tests.support.servers import ROOT, flow_server
from trellis.clients import Client

NODE_DIR = ROOT / "clients" / "node"



@pytest.fixture(scope="module")
def node_modules() -> Path:
    return node.node_modules(NODE_DIR, "google-proto-files")


async def test_the_node_example_walks_a_flow_to_its_end(node_modules: Path, quiz: Path) -> None:
    async with flow_server(quiz) as server:
        target = f"127.0.0.1:{server.port}"
        process = await asyncio.create_subprocess_exec(
            "node",
            "example.js",
            target,
            "from-node",
            "Nadia",
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(120):
            out, err = await process.communicate()
        output = out.decode()
        assert process.returncode == 0, f"{output}\n{err.decode()}"
        lines = output.splitlines()
        assert "Who are you?" in lines and "> Nadia" in lines
        assert 'TOOL lookup {"who":"Nadia"}' in lines
        assert lines[-1] == "END done"
        assert any(line.startswith("Bye Nadia, you are") for line in lines)
        # The session the Node client drove is stored on the server, finished.
        async with Client(target) as client:
            step = await client.sessions.get("from-node")
        assert step.terminal and step.state.context["found"] == {"tool": "lookup", "by": "node"}


async def test_the_node_example_reports_a_server_error(node_modules: Path, quiz: Path) -> None:
    async with flow_server(quiz) as server:
        process = await asyncio.create_subprocess_exec(
            "node",
            "example.js",
            f"127.0.0.1:{server.port}",
            "../escape",
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(120):
            _out, err = await process.communicate()
    assert process.returncode == 1
    assert "INVALID_ARGUMENT" in err.decode() and "../escape" in err.decode()
    # The error details are decoded: the reason, its metadata and the field at fault.
    lines = err.decode().splitlines()
    reasons = [line for line in lines if line.startswith("reason: INVALID_SESSION_ID ")]
    assert reasons and '"field":"session_id"' in reasons[0]
    assert "bad field: session_id" in lines
