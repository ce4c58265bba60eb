"""Fixtures: a real trellis server on 127.0.0.1 serving a flow directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.grpc_clients.flows import write_quiz
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@asynccontextmanager
async def flow_server(flow_dir: Path, **settings: object) -> AsyncIterator[TrellisServer]:
    config = ServerConfig(flow_dir=str(flow_dir), listen="127.0.0.1:0")
    for key, value in settings.items():
        setattr(config, key, value)
    server = TrellisServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=2.0)


@pytest.fixture
def quiz(tmp_path: Path) -> Path:
    return write_quiz(tmp_path / "quiz")


@pytest.fixture
async def quiz_target(quiz: Path) -> AsyncIterator[str]:
    async with flow_server(quiz) as server:
        yield f"127.0.0.1:{server.port}"
