"""Fixtures: a real trellis gRPC server on 127.0.0.1 (port 0, read back) and a channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.grpc_server.flows import write_flow
from tests.support.grpc_server import running
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_flow(tmp_path / "flow")


@pytest.fixture
async def served(flow: Path) -> AsyncIterator[tuple[TrellisServer, grpc.aio.Channel]]:
    async with running(ServerConfig(flow_dir=str(flow))) as pair:
        yield pair
