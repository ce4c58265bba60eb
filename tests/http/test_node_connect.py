"""The Node client's Connect transport against a real server: the same objects and
errors as its gRPC transport, watches as a Connect stream, and example.js walking the
tour over HTTP."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.support.cli import ROOT, copy_example
from tests.support.node import node_modules
from tests.support.servers import flow_server

NODE_DIR = ROOT / "clients" / "node"
CHECKS = Path(__file__).with_name("node_transports.js")


@pytest.fixture(scope="module")
def modules() -> Path:
    return node_modules(NODE_DIR, "protobufjs")


async def _node(*args: str, token: str = "") -> tuple[int, str, str]:
    env = {key: value for key, value in os.environ.items() if key != "TRELLIS_TOKEN"}
    if token:
        env["TRELLIS_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        "node", *args, cwd=NODE_DIR, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_connect_and_grpc_transports_give_the_same_results(modules: Path, tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        code, out, err = await _node(
            str(CHECKS), str(NODE_DIR), f"127.0.0.1:{server.port}", f"http://127.0.0.1:{server.http_port}"
        )
    assert code == 0, f"{out}\n{err}"
    assert out.strip() == "ok"


async def test_the_node_example_walks_the_tour_over_connect(modules: Path, tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    async with flow_server(tour, http_listen="127.0.0.1:0", token="node-token") as server:
        url = f"http://127.0.0.1:{server.http_port}"
        code, _out, err = await _node("example.js", url, "over-http", "Nadia", "finish", "")
        assert code == 1 and "UNAUTHENTICATED" in err  # no token: refused like over gRPC
        code, out, err = await _node(
            "example.js", url, "over-http", "Nadia", "finish", "", token="node-token"
        )
    lines = out.splitlines()
    assert code == 0, f"{out}\n{err}"
    assert "> Nadia" in lines and "# Goodbye, Nadia" in lines
    assert lines[-1] == "END finish"
