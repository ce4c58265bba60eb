"""Fixtures: a real trellis gRPC server on 127.0.0.1 (port 0, read back) and a channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.grpc_server.flows import write_flow
from tests.support.grpc_server import internal_channel, running
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "flow")


@pytest.fixture
async def served(flow: Path) -> AsyncIterator[tuple[TrellisServer, grpc.aio.Channel]]:
    """A server with its internal listener on (StateStore, ActionDispatcher): see ``internal``."""
    async with running(ServerConfig(flow_dir=str(flow), internal_listen="127.0.0.1:0")) as pair:
        yield pair


@pytest.fixture
async def internal(
    served: tuple[TrellisServer, grpc.aio.Channel],
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the ``served`` server's internal listener."""
    async with internal_channel(served[0]) as channel:
        yield channel
