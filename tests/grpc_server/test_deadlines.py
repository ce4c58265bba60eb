"""A caller's deadline bounds the step on the server: the step stops, nothing is
saved, and the session's lock is free for the next step."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from tests.support.grpc_server import failure, running
from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.domain import HookKind, LifecycleEvent
from trellis.engine import Engine
from trellis.server.compose import Composition
from trellis.server.config import ServerConfig
from trellis.sessions import SessionManager


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


SLOW_NODES = [
    {"id": "start", "wait": True, "save_to": "name", "to": "slow"},
    {"id": "slow", "content": "Hello {{ .name }}", "wait": True},
]


async def test_a_step_that_held_the_loop_past_the_deadline_is_not_saved() -> None:
    # Evaluation that never awaits cannot be interrupted by the caller's deadline: a hook
    # stands in for it here, holding the event loop well past the deadline. Before the fix
    # the step was saved when it finally finished (the issue: 63 s after the deadline).
    def hold_the_loop(event: LifecycleEvent) -> None:
        if event.kind is HookKind.NODE_ENTER and event.node_id == "slow":
            time.sleep(1.0)

    loader = MemoryLoader(SLOW_NODES)
    store = MemoryStore()
    engine = Engine(loader, hooks=[hold_the_loop])
    sessions = SessionManager(engine, store, locker=LocalLocker())
    ports = Composition(loader=loader, store=store, dispatcher=None, engine=engine, sessions=sessions)
    async with running(ServerConfig(), ports=ports) as (_server, channel):
        stub = sessions_pb2_grpc.SessionsStub(channel)
        before = (await stub.Start(spb.SessionsStartRequest(session_id="d"))).step.state

        request = spb.SessionsNavigateRequest(session_id="d", input=pb.Input(text="Ada"))
        code, _reason, _ = await failure(stub.Navigate(request, timeout=0.2))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED

        # Answered once the held step is over: it was abandoned, not saved.
        after = (await stub.Get(spb.SessionsGetRequest(session_id="d"), timeout=30)).step.state
        assert after.revision == before.revision
        assert after == before
        assert (await store.load("d")).current_node_id == "start"
