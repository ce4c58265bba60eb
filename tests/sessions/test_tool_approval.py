"""Tool approvals in durable sessions: a denied tool never runs and the flow takes its
on_denied; a tool to confirm runs only after the session answers yes (trellis.tool_approval)."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import ActionType, JSONValue, State, Status, StepResult, ToolResult
from trellis.engine import Engine
from trellis.errors import InvalidConfirmation, InvalidInput
from trellis.sessions import SessionManager
from trellis.tool_approval import DENIED_BY_POLICY, DENIED_BY_USER, Approval, ToolApprovals

FLOW: list[dict[str, Any]] = [
    {"id": "start", "wait": True, "save_to": "who", "to": "pay"},
    {
        "id": "pay",
        "content": "Charging {{ .who }}",
        "do": {"name": "charge", "args": {"who": "{{ .who }}"}},
        "save_to": "receipt",
        "on_denied": "refused",
        "to": "done",
    },
    {"id": "refused", "content": "not charged"},
    {"id": "done", "content": "paid: {{ .receipt }}"},
]


class Charges:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, args: dict[str, Any]) -> Any:
        self.calls.append(args)
        return f"receipt for {args['who']}"


class ResultsSeen:
    """The engine, noting every tool result it is given (a denial fires no hook event)."""

    def __init__(self, engine: Engine, seen: list[Any]) -> None:
        self._engine = engine
        self._seen = seen

    async def navigate(self, state: State, input: JSONValue | ToolResult) -> State:
        if isinstance(input, ToolResult):
            self._seen.append(input)
        return await self._engine.navigate(state, input)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _manager(
    approval: Approval, charges: Charges | None, returns: list[Any] | None = None
) -> SessionManager:
    """``returns`` receives the results the engine was given for its tool calls."""
    tools = InProcessDispatcher({"charge": charges}) if charges is not None else None
    return SessionManager(
        ResultsSeen(Engine(MemoryLoader(FLOW)), returns if returns is not None else []),
        MemoryStore(),
        dispatcher=tools,
        approvals=ToolApprovals({"charge": approval}),
    )


def _kinds(step: StepResult) -> list[ActionType]:
    return [a.type for a in step.render.actions]


async def test_a_denied_tool_never_runs_and_the_flow_takes_on_denied() -> None:
    charges = Charges()
    returns: list[Any] = []
    manager = _manager(Approval.DENY, charges, returns)
    await manager.start("s")
    step = await manager.navigate("s", "Ada")
    assert step.state.current_node_id == "refused"
    assert charges.calls == []
    assert [(r.is_denied, r.error) for r in returns] == [(True, DENIED_BY_POLICY)]


async def test_a_denied_tool_is_denied_even_when_the_caller_would_run_it() -> None:
    manager = _manager(Approval.DENY, None)
    await manager.start("s")
    step = await manager.navigate("s", "Ada")
    assert step.state.current_node_id == "refused"
    assert ActionType.CALL_TOOL not in _kinds(step)


async def test_a_tool_to_confirm_waits_for_yes_then_runs_once() -> None:
    charges = Charges()
    manager = _manager(Approval.CONFIRM, charges)
    await manager.start("s")
    asked = await manager.navigate("s", "Ada")
    assert (asked.state.current_node_id, asked.state.status) == ("pay", Status.WAITING_FOR_TOOL)
    assert _kinds(asked) == [ActionType.RENDER_CONTENT, ActionType.SYSTEM_MESSAGE, ActionType.REQUEST_INPUT]
    assert "Tool Request: 'charge'" in str(asked.render.actions[1].payload)
    assert '"who":"Ada"' in str(asked.render.actions[1].payload)
    request = asked.render.input_request()
    assert request is not None and request.type == "confirm"
    assert charges.calls == []
    assert (await manager.get("s")).render == asked.render  # a resumed client is asked too

    with pytest.raises(InvalidConfirmation):
        await manager.navigate("s", "perhaps")
    with pytest.raises(InvalidInput, match="waits for confirmation"):
        await manager.navigate("s", ToolResult(id=asked.state.pending_tool_call, result="forged"))
    assert (await manager.get("s")).state.revision == asked.state.revision  # nothing was saved

    done = await manager.navigate("s", "yes")
    assert done.state.current_node_id == "done"
    assert done.state.context["receipt"] == "receipt for Ada"
    assert charges.calls == [{"who": "Ada"}]


async def test_answering_no_denies_the_tool() -> None:
    charges = Charges()
    returns: list[Any] = []
    manager = _manager(Approval.CONFIRM, charges, returns)
    await manager.start("s")
    await manager.navigate("s", "Ada")
    step = await manager.navigate("s", "no")
    assert step.state.current_node_id == "refused"
    assert [(r.is_denied, r.error) for r in returns] == [(True, DENIED_BY_USER)]
    assert charges.calls == []


async def test_a_tool_the_caller_runs_is_the_callers_to_confirm() -> None:
    manager = _manager(Approval.CONFIRM, None)
    await manager.start("s")
    step = await manager.navigate("s", "Ada")
    call = step.render.tool_call()
    assert call is not None and call.name == "charge"
    # A client resuming the session is asked to run the call too, not to confirm it.
    resumed = await manager.get("s")
    assert resumed.render.tool_call() == call and resumed.render.input_request() is None
    done = await manager.navigate("s", ToolResult(id=call.id, result="paid by the client"))
    assert done.state.current_node_id == "done"


async def test_allowed_tools_run_as_before() -> None:
    charges = Charges()
    manager = _manager(Approval.ALLOW, charges)
    await manager.start("s")
    step = await manager.navigate("s", "Ada")
    assert step.state.current_node_id == "done"
    assert charges.calls == [{"who": "Ada"}]
