"""Every RPC step is counted, timed and logged as one JSON line at info level; with info
off for the step logger nothing is logged but the metrics still count."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from tests.support.grpc_server import failure, running
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.server.config import ServerConfig
from trellis.server.observe import STEP_LOG


def step_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == STEP_LOG.name]


async def test_each_step_logs_one_line_and_counts_by_outcome(
    flow: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=STEP_LOG.name)
    async with running(ServerConfig(flow_dir=str(flow))) as (server, channel):
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        await sessions.Start(spb.SessionsStartRequest(session_id="o1"))
        for _ in range(2):
            await sessions.Get(spb.SessionsGetRequest(session_id="o1"))
        await failure(sessions.Navigate(spb.SessionsNavigateRequest(session_id="ghost", input=pb.Input())))

        lines = step_lines(caplog)
        assert [(line["rpc"], line["session"], line["outcome"]) for line in lines] == [
            ("Sessions.Start", "o1", "ok"),
            ("Sessions.Get", "o1", "ok"),
            ("Sessions.Get", "o1", "ok"),
            ("Sessions.Navigate", "ghost", "SESSION_NOT_FOUND"),
        ]
        assert lines[1]["node"] == "start" and lines[1]["event"] == "step"
        sample = server.observer.registry.get_sample_value
        assert sample("trellis_steps_total", {"service": "Sessions", "method": "Get", "outcome": "ok"}) == 2
        assert (
            sample(
                "trellis_steps_total",
                {"service": "Sessions", "method": "Navigate", "outcome": "SESSION_NOT_FOUND"},
            )
            == 1
        )
        assert sample("trellis_step_duration_seconds_count", {"service": "Sessions", "method": "Get"}) == 2


async def test_with_info_off_steps_still_count_but_log_nothing(
    flow: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=STEP_LOG.name)
    async with running(ServerConfig(flow_dir=str(flow))) as (server, channel):
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        await sessions.Start(spb.SessionsStartRequest(session_id="o2"))
        await sessions.Get(spb.SessionsGetRequest(session_id="o2"))
        assert step_lines(caplog) == []
        sample = server.observer.registry.get_sample_value
        assert sample("trellis_steps_total", {"service": "Sessions", "method": "Get", "outcome": "ok"}) == 1
