"""Lifecycle events over gRPC: a host holding a Client sees, through its hooks, the events
an in-process host sees for the same steps (node enter/leave, tool call/return with their
inputs and outputs), and each reply's events stay within their limits (docs/server.md)."""

from __future__ import annotations

from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from tests.support.servers import serving
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.api import step_reports
from trellis.api.step_reports import MAX_EVENT_BYTES_PER_REPLY, MAX_EVENTS_PER_REPLY
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.clients import Client
from trellis.domain import LifecycleEvent
from trellis.engine import Engine
from trellis.errors import UnhandledToolError
from trellis.sessions import SessionManager

ORDER = [
    {"id": "start", "wait": True, "save_to": "item", "to": "price"},
    {"id": "price", "do": {"name": "price", "args": {"item": "{{ .item }}"}}, "save_to": "cost",
     "to": "check"},
    {"id": "check", "do": {"name": "refuse"}, "on_error": "sorry", "to": "done"},
    {"id": "sorry", "content": "no {{ .item }} for {{ .cost }}", "wait": True, "to": "done"},
    {"id": "done", "content": "bye"},
]


def _tools() -> InProcessDispatcher:
    def price(args: dict[str, Any]) -> Any:
        return {"amount": len(str(args["item"])), "currency": "EUR"}

    def refuse(args: dict[str, Any]) -> Any:
        raise RuntimeError("out of stock")

    return InProcessDispatcher({"price": price, "refuse": refuse})


def _seen(events: list[LifecycleEvent]) -> list[tuple[Any, ...]]:
    """Everything of an event but its timestamp (taken where each engine ran)."""
    return [(e.kind.value, e.node_id, e.node_type, e.tool_name, e.data, e.is_error) for e in events]


async def _walk(sessions: Any) -> None:
    await sessions.start("o1")
    await sessions.navigate("o1", "tea")
    await sessions.navigate("o1", "")


async def test_a_client_with_hooks_sees_what_an_in_process_host_sees() -> None:
    local: list[LifecycleEvent] = []
    manager = SessionManager(
        Engine(MemoryLoader(ORDER), hooks=[local.append]), MemoryStore(), dispatcher=_tools()
    )
    await _walk(manager)

    remote: list[LifecycleEvent] = []
    async with serving(loader=MemoryLoader(ORDER), dispatcher=_tools()) as served:
        async with Client(served.target, hooks=[remote.append]) as client:
            await _walk(client.sessions)

    assert _seen(remote) == _seen(local)
    kinds = [(kind, node, tool) for kind, node, _, tool, _, _ in _seen(remote)]
    assert ("tool_call", "price", "price") in kinds and ("tool_return", "check", "refuse") in kinds
    calls = {e.tool_name: e.data for e in remote if e.kind.value == "tool_call"}
    assert calls["price"] == {"item": "tea"}
    returns = {e.tool_name: e.data for e in remote if e.kind.value == "tool_return"}
    assert returns["price"].result == {"amount": 3, "currency": "EUR"}
    assert returns["refuse"].is_error and "out of stock" in returns["refuse"].error


async def test_the_engine_service_replays_events_into_the_clients_hooks() -> None:
    remote: list[LifecycleEvent] = []
    async with serving(loader=MemoryLoader(ORDER)) as served:
        async with Client(served.target, hooks=[remote.append]) as client:
            step = await client.engine.start("e1")
            step = await client.engine.navigate(step.state, "tea")
    assert [(e.kind.value, e.node_id) for e in remote] == [
        ("node_enter", "start"),
        ("node_leave", "start"),
        ("node_enter", "price"),
        ("tool_call", "price"),
    ]
    assert remote[-1].data == {"item": "tea"}


async def test_a_large_tool_result_is_left_out_of_the_events_not_the_order() -> None:
    big = "x" * (MAX_EVENT_BYTES_PER_REPLY + 1)
    tools = InProcessDispatcher({"price": lambda args: big, "refuse": lambda args: "fine"})
    async with serving(loader=MemoryLoader(ORDER), dispatcher=tools) as served:
        async with grpc.aio.insecure_channel(served.target) as channel:
            stub = sessions_pb2_grpc.SessionsStub(channel)
            await stub.Start(spb.SessionsStartRequest(session_id="big"))
            reply = await stub.Navigate(spb.SessionsNavigateRequest(session_id="big", input={"text": "tea"}))
    events = reply.events.events
    assert reply.step.state.current_node_id == "done"  # the result itself was saved
    assert [e.node_id for e in events][:3] == ["start", "price", "price"]
    omitted = [e for e in events if e.data_omitted]
    assert [(e.tool_name, e.HasField("tool_result")) for e in omitted] == [("price", False)]
    assert reply.events.ByteSize() <= MAX_EVENT_BYTES_PER_REPLY
    assert reply.events.dropped == 0


async def test_events_past_the_count_limit_are_counted_not_sent() -> None:
    length = MAX_EVENTS_PER_REPLY  # each automatic move fires a leave and an enter
    chain = [{"id": "start", "wait": True, "to": "n1"}]
    chain += [{"id": f"n{i}", "to": f"n{i + 1}"} for i in range(1, length)]
    chain += [{"id": f"n{length}", "content": "end"}]
    local: list[LifecycleEvent] = []
    manager = SessionManager(Engine(MemoryLoader(chain), hooks=[local.append]), MemoryStore())
    await manager.start("long")
    local.clear()
    await manager.navigate("long", "")
    assert len(local) > 2 * length
    async with serving(loader=MemoryLoader(chain)) as served:
        async with grpc.aio.insecure_channel(served.target) as channel:
            stub = sessions_pb2_grpc.SessionsStub(channel)
            await stub.Start(spb.SessionsStartRequest(session_id="long"))
            reply = await stub.Navigate(spb.SessionsNavigateRequest(session_id="long", input={"text": ""}))
    assert reply.step.state.current_node_id == f"n{length}"
    assert len(reply.events.events) == MAX_EVENTS_PER_REPLY
    assert reply.events.dropped == len(local) - MAX_EVENTS_PER_REPLY
    sent = [(e.kind, e.node_id) for e in step_reports.events_from_proto(reply.events)]
    assert sent == [(e.kind, e.node_id) for e in local[:MAX_EVENTS_PER_REPLY]]


async def test_a_failed_step_still_reports_the_events_it_fired() -> None:
    # No on_error: the refusal halts the step (nothing is saved), after its tool_return.
    flow = [{**node, "on_error": ""} if node["id"] == "check" else node for node in ORDER]
    local: list[LifecycleEvent] = []
    engine = Engine(MemoryLoader(flow), hooks=[local.append])
    manager = SessionManager(engine, MemoryStore(), dispatcher=_tools())
    with pytest.raises(UnhandledToolError):
        await _walk(manager)

    remote: list[LifecycleEvent] = []
    async with serving(loader=MemoryLoader(flow), dispatcher=_tools()) as served:
        async with Client(served.target, hooks=[remote.append]) as client:
            with pytest.raises(UnhandledToolError):
                await _walk(client.sessions)
            assert (await client.sessions.get("o1")).state.current_node_id == "start"

    assert _seen(remote) == _seen(local)
    assert _seen(remote)[-1][:4] == ("tool_return", "check", "text", "refuse")
