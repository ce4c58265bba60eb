"""A caller's deadline bounds the step on the server: the step stops, nothing is
saved, and the session's lock is free for the next step."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.grpc_server.conftest import failure
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb


async def test_a_step_past_the_callers_deadline_changes_nothing(
    served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, channel = served
    sessions = sessions_pb2_grpc.SessionsStub(channel)
    before = (await sessions.Start(spb.SessionsStartRequest(session_id="d"))).step.state

    monkeypatch.setenv("SHOUT_MARKER", str(tmp_path / "started"))
    monkeypatch.setenv("SHOUT_SLEEP", "30")  # the tool hangs far beyond the deadline
    request = spb.SessionsNavigateRequest(session_id="d", input=pb.Input(text="slow"))
    code, _reason, _ = await failure(sessions.Navigate(request, timeout=1.0))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await sessions.Get(spb.SessionsGetRequest(session_id="d"))).step.state == before

    monkeypatch.delenv("SHOUT_MARKER")
    step = (await sessions.Navigate(request, timeout=60)).step  # the lock was released
    assert step.state.current_node_id == "lookup"
    assert server.composition.sessions.lock_count() == 0
