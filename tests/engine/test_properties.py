"""Properties of the engine over random walks through a graph that uses every
feature (choices, confirm, tools, denials, rollback, signals):

* determinism: the same state and input give equal next states, equal renders and
  equal idempotency keys, whether the engine is warm or freshly built;
* Navigate and Signal never mutate the state they are given, also when they fail;
* a failed operation changes nothing (the caller's state is intact and no hook fires).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trellis.domain import State, Status, ToolResult
from trellis.engine import Engine
from trellis.errors import TrellisError

from .helpers import Recorder, make_engine

# Each example compares hook events and builds fresh engines per step (hundreds of
# servers over gRPC); the scenario tests cover the served engine.
pytestmark = pytest.mark.in_process_only(reason="asserts hook events; runs its own event loop per example")

GRAPH: list[dict[str, Any]] = [
    {
        "id": "start",
        "wait": True,
        "save_to": "name",
        "on_interrupt": "end",
        "options": [
            {"text": "shop", "to": "book"},
            {"text": "ask", "to": "ask"},
            {"text": "quit", "to": "end"},
        ],
        "transitions": [{"to": "loop", "condition": "size(string(input)) > 4"}],
    },
    {"id": "loop", "content": "hi {{ .name }}", "wait": True, "on_denied": "end", "to": "start"},
    {"id": "ask", "input_type": "confirm", "save_to": "ok", "on_denied": "start", "to": "book"},
    {
        "id": "book",
        "do": {"name": "book", "args": {"who": "{{ .name }}"}},
        "undo": {"name": "cancel", "args": {"ref": "{{ .tool_result }}"}},
        "on_error": "rollback",
        "on_denied": "start",
        "transitions": [{"to": "rollback", "condition": "input == 'abort'"}],
        "to": "pay",
    },
    {"id": "pay", "do": {"name": "pay"}, "undo": {"name": "refund"}, "on_error": "Rollback", "to": "end"},
    {"id": "end", "content": "bye {{ .name }}", "on_signal": {"again": "start"}},
]

_values = st.one_of(
    st.sampled_from(["shop", "shop", "ask", "quit", "y", "n", "no", "abort", "", "hello", "0", "deny"]),
    st.none(),
    st.integers(-2, 5),
    st.booleans(),
    st.dictionaries(st.sampled_from(["a", "_id", "ref"]), st.integers(0, 3), max_size=2),
)
# Each step: (selector, input value, tool-result kind, signal). What the step does
# depends on the state it meets, so walks reach tools, denials and rollbacks often.
_steps = st.lists(
    st.tuples(
        st.integers(0, 9),
        _values,
        st.sampled_from(["ok", "ok", "error", "denied", "wrong"]),
        st.sampled_from(["interrupt", "again", "unknown"]),
    ),
    max_size=14,
)


def _snapshot(state: State) -> str:
    return json.dumps(state.to_json(), sort_keys=True)


def _tool_input(state: State, kind: str, value: Any) -> ToolResult:
    call_id = "nobody" if kind == "wrong" else state.pending_tool_call
    return ToolResult(
        id=call_id,
        result=value,
        is_error=kind == "error",
        is_denied=kind == "denied",
        error="failed" if kind == "error" else "",
    )


async def _step(engine: Engine, state: State, op: str, arg: Any) -> State:
    if op == "signal":
        return await engine.signal(state, arg)
    if op == "tool":
        return await engine.navigate(state, _tool_input(state, *arg))
    return await engine.navigate(state, arg)


async def _outcome(engine: Engine, state: State, op: str, arg: Any) -> tuple[str, Any]:
    try:
        new = await _step(engine, state, op, arg)
    except TrellisError as exc:
        return "error", (type(exc), exc.message)
    try:
        render: Any = await engine.render(new)
    except TrellisError as exc:
        render = (type(exc), exc.message)
    return "ok", (new, render)


def _choose(state: State, selector: int, value: Any, kind: str, signal: str) -> tuple[str, Any]:
    if state.status in (Status.WAITING_FOR_TOOL, Status.ROLLING_BACK):
        if selector < 8:
            return "tool", (kind, value)
        return ("input", value) if selector == 8 else ("signal", signal)
    if selector < 7:
        return "input", value
    return ("tool", (kind, value)) if selector == 7 else ("signal", signal)


async def _walk(steps: list[tuple[int, Any, str, str]]) -> None:
    hooks = Recorder()
    warm = make_engine(*GRAPH, hooks=[hooks])
    state = await warm.start("prop", {"name": "ann"})
    for selector, value, kind, signal in steps:
        op, arg = _choose(state, selector, value, kind, signal)
        before = _snapshot(state)
        hooks.clear()
        first = await _outcome(warm, state, op, arg)
        assert _snapshot(state) == before, "the input state was mutated"
        fresh = make_engine(*GRAPH)  # nothing cached: compiles every node again
        second = await _outcome(fresh, state, op, arg)
        again = await _outcome(warm, state, op, arg)
        assert _snapshot(state) == before
        assert first[0] == second[0] == again[0]
        if first[0] == "error":
            assert first[1] == second[1] == again[1]
            assert hooks.events == [] or hooks.seen()[0][0] == "tool_return"
            continue
        new_states = [first[1][0], second[1][0], again[1][0]]
        assert len({_snapshot(s) for s in new_states}) == 1, "same state + input, different next states"
        assert first[1][1] == second[1][1] == again[1][1], "renders (and idempotency keys) differ"
        assert new_states[0] is not state
        state = new_states[0]
        if state.status is Status.TERMINATED:
            assert state.terminated


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_steps)
def test_engine_is_deterministic_and_never_mutates_its_input(steps: list[tuple[int, Any, str, str]]) -> None:
    asyncio.run(_walk(steps))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["book", "pay", "ask", "start", "loop"]), _values)
def test_failed_navigation_changes_nothing(node_id: str, value: Any) -> None:
    async def main() -> None:
        hooks = Recorder()
        engine = make_engine(*GRAPH, {"id": "dangling", "to": "ghost"}, hooks=[hooks])
        state = State.new("p", node_id)
        state.history = ["start", node_id]
        state.context = {"name": "ann", "tags": ["x"]}
        # Wrong kinds of input for the state: each must fail without side effects.
        attempts: list[Any] = [ToolResult(id="nobody", result=value)]
        if node_id in ("book", "pay"):
            state.status = Status.WAITING_FOR_TOOL
            state.pending_tool_call = node_id
            attempts.append(value)
        before = _snapshot(state)
        for attempt in attempts:
            try:
                await engine.navigate(state, attempt)
            except TrellisError:
                pass
            else:
                raise AssertionError(f"navigate accepted {attempt!r} in status {state.status}")
        dangling = State.new("p", "dangling")
        dangling_before = _snapshot(dangling)
        try:
            await engine.navigate(dangling, value)
        except TrellisError:
            pass
        assert _snapshot(dangling) == dangling_before
        assert _snapshot(state) == before
        assert hooks.events == []

    asyncio.run(main())
