"""RemoteEngine as the EnginePort of a local SessionManager: the engine runs in the
server, sessions and tools stay here."""

from __future__ import annotations

import pytest

from trellis.adapters.grpc import RemoteChannel, RemoteEngine
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import ActionType, JSONValue, State, Status
from trellis.errors import NodeNotFound, UnhandledSignal
from trellis.ports.engine import EnginePort
from trellis.sessions import SessionManager


def lookup(args: dict[str, JSONValue]) -> JSONValue:
    return f"known as {args['who']}"


async def test_a_local_session_manager_over_a_remote_engine(quiz_target: str) -> None:
    engine = RemoteEngine(RemoteChannel(quiz_target))
    try:
        assert isinstance(engine, EnginePort)
        store = MemoryStore()
        manager = SessionManager(engine, store, dispatcher=InProcessDispatcher({"lookup": lookup}))
        step = await manager.start("local", {"from": "here"})
        assert step.state.current_node_id == "start"
        step = await manager.navigate("local", "Ada")
        # The tool ran here, the engine there; the state lives in the local store.
        assert step.terminal and step.state.context["found"] == "known as Ada"
        shown = [a.payload for a in step.render.actions if a.type is ActionType.RENDER_CONTENT]
        assert "Bye Ada, you are known as Ada.\n" in shown
        assert (await store.load("local")).history == step.state.history

        await manager.start("other")
        stopped = await manager.signal("other", "interrupt")
        assert stopped.state.current_node_id == "stopped" and stopped.state.status is Status.TERMINATED
        with pytest.raises(UnhandledSignal):
            await engine.signal(State.new("x", "lookup"), "unheard-of")
        with pytest.raises(NodeNotFound):
            await engine.render(State.new("x", "nowhere"))
        ids = [n.id for n in await engine.inspect()]
        assert ids == sorted(ids) and {"done", "lookup", "start", "stopped"} <= set(ids)
    finally:
        await engine.aclose()
