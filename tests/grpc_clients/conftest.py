"""Fixtures: a real trellis server on 127.0.0.1 serving a flow directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.grpc_clients.flows import write_quiz
from tests.support.servers import flow_server


@pytest.fixture
def quiz(tmp_path: Path) -> Path:
    return write_quiz(tmp_path / "quiz")


@pytest.fixture
async def quiz_target(quiz: Path) -> AsyncIterator[str]:
    async with flow_server(quiz) as server:
        yield f"127.0.0.1:{server.port}"


@pytest.fixture(params=[False, True], ids=["unary", "step-stream"])
def step_stream(request: pytest.FixtureRequest) -> bool:
    """The SDK's steps as unary calls, then over one Sessions.Steps stream: the same
    results, errors and retries either way."""
    return bool(request.param)
