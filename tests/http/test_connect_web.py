"""The official Connect clients (@connectrpc/connect-web: its Connect transport in JSON
and binary, and its gRPC-Web transport) against the HTTP listener: unary calls, a
server stream, and the error table's ErrorInfo found with ConnectError.findDetails. The
schemas come from a descriptor set of the protos made here, so nothing is generated."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.rpc import error_details_pb2
from grpc_tools import protoc

from tests.support.cli import ROOT, copy_example
from tests.support.node import node_modules
from tests.support.servers import flow_server

PACKAGE = Path(__file__).with_name("connect-web")


@pytest.fixture(scope="module")
def modules() -> Path:
    return node_modules(PACKAGE, "@connectrpc/connect-web")


def descriptor_set(out: Path) -> Path:
    """protos/trellis/v1/sessions.proto and google/rpc/error_details.proto with their imports."""
    include = Path(protoc.__file__).parent / "_proto"
    googleapis = Path(error_details_pb2.__file__).parents[2]
    status = protoc.main(
        [
            "protoc",
            f"-I{ROOT / 'protos'}",
            f"-I{include}",
            f"-I{googleapis}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            "trellis/v1/sessions.proto",
            "google/rpc/error_details.proto",
        ]
    )
    assert status == 0, "protoc failed"
    return out


async def test_connect_web_transports_walk_watch_and_read_errors(modules: Path, tmp_path: Path) -> None:
    schemas = descriptor_set(tmp_path / "trellis.binpb")
    tour = copy_example("tour", tmp_path)
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(PACKAGE / "interop.mjs"),
            str(schemas),
            f"http://127.0.0.1:{server.http_port}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(120):
            out, err = await process.communicate()
    assert process.returncode == 0, f"{out.decode()}\n{err.decode()}"
    assert out.decode().split() == ["ok", "connect-json", "ok", "connect-binary", "ok", "grpc-web"]
