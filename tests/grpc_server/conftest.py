"""Fixtures: a real trellis gRPC server on 127.0.0.1 (port 0, read back) and a channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.grpc_server.flows import write_flow
from trellis.api import error_table
from trellis.server.app import TrellisServer
from trellis.server.compose import Composition
from trellis.server.config import ServerConfig


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "flow")


@asynccontextmanager
async def running(
    config: ServerConfig, *, ports: Composition | None = None, metadata: Any = None
) -> AsyncIterator[tuple[TrellisServer, grpc.aio.Channel]]:
    config.listen = "127.0.0.1:0"
    if config.internal_listen:
        config.internal_listen = "127.0.0.1:0"
    server = TrellisServer(config, composition=ports)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield server, channel
    finally:
        await server.stop(grace=1.0)


@pytest.fixture
async def served(flow: Path) -> AsyncIterator[tuple[TrellisServer, grpc.aio.Channel]]:
    """A server with its internal listener on (StateStore, ActionDispatcher): see ``internal``."""
    async with running(ServerConfig(flow_dir=str(flow), internal_listen="127.0.0.1:0")) as pair:
        yield pair


def internal_channel(server: TrellisServer) -> grpc.aio.Channel:
    assert server.internal_port, "the server has no internal listener"
    return grpc.aio.insecure_channel(f"127.0.0.1:{server.internal_port}")


@pytest.fixture
async def internal(
    served: tuple[TrellisServer, grpc.aio.Channel],
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the ``served`` server's internal listener."""
    async with internal_channel(served[0]) as channel:
        yield channel


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, str]:
    """The status code, ErrorInfo reason and message of an RPC that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        details = None
        for key, value in exc.trailing_metadata() or ():
            if key == error_table.STATUS_DETAILS_KEY:
                details = value
        info = error_table.error_info_from(details)
        return exc.code(), info.reason if info is not None else "", exc.details() or ""
    raise AssertionError("the call succeeded but was expected to fail")
