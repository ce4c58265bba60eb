"""Tool results: denied, error, success, and SAGA rollback (docs/engine.md, "Tools and sagas")."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.domain import HookKind, Node, State, Status, ToolCall, ToolResult, Transition
from trellis.errors import ContextValidationError, NodeLoadError, UnhandledToolError

from .helpers import Recorder, denied, failed, make_engine, ok


def _tool(node_id: str = "act", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "do": {"name": "charge"}, **extra}


async def _at_tool(engine: Any, **context: Any) -> State:
    state = await engine.start("s", context)
    if state.current_node_id != "act":
        state = await engine.navigate(state, "")
    assert state.status is Status.WAITING_FOR_TOOL
    return state


_START = {"id": "start", "to": "act"}

# --- denied ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "target"),
    [({"on_denied": "no", "on_error": "err"}, "no"), ({"on_error": "err"}, "err"), ({}, "dflt")],
)
async def test_3_4_2_denied_target_chain(extra: dict[str, Any], target: str) -> None:
    hooks = Recorder()
    engine = make_engine(
        _START,
        _tool(**extra, to="end"),
        *({"id": i} for i in ("no", "err", "dflt", "end")),
        default_error_node="dflt",
        hooks=[hooks],
    )
    state = await _at_tool(engine)
    hooks.clear()
    moved = await engine.navigate(state, denied("charge"))
    assert moved.current_node_id == target
    assert moved.status is Status.ACTIVE and moved.pending_tool_call == ""
    # node_leave on denial transitions; no tool_return for a call that never ran
    # (docs/engine-differences.md, fix #9).
    assert hooks.seen() == [("node_leave", "act"), ("node_enter", target)]


async def test_3_4_2_denied_without_target_terminates_fix_17_8() -> None:
    engine = make_engine(_START, _tool(to="end"), {"id": "end"})
    state = await _at_tool(engine)
    done = await engine.navigate(state, denied("charge"))
    assert done.status is Status.TERMINATED
    assert done.terminated
    assert done.pending_tool_call == ""
    assert done.current_node_id == "act"


async def test_3_4_2_denied_into_on_error_rollback_rolls_back_fix_17_7() -> None:
    engine = make_engine(
        {"id": "start", "do": {"name": "book"}, "undo": {"name": "cancel"}, "to": "act"},
        _tool(on_error="ROLLBACK", to="end"),
        {"id": "end"},
    )
    state = await engine.start("s")
    state = await engine.navigate(state, ok("book"))
    assert state.current_node_id == "act"
    rolling = await engine.navigate(state, denied("charge"))
    assert rolling.status is Status.ROLLING_BACK
    assert rolling.current_node_id == "start"
    assert rolling.pending_tool_call == "cancel"


async def test_3_4_2_denial_does_not_touch_save_to_or_sys_ans() -> None:
    engine = make_engine(_START, _tool(save_to="out", on_denied="end"), {"id": "end"})
    state = await _at_tool(engine)
    moved = await engine.navigate(state, denied("charge"))
    assert "out" not in moved.context
    assert moved.system_context == state.system_context


# --- error -------------------------------------------------------------------------------------


async def test_3_4_3_error_goes_to_on_error_with_hooks_fix_17_9() -> None:
    hooks = Recorder()
    engine = make_engine(
        _START, _tool(on_error="oops", save_to="out", to="end"), {"id": "oops"}, {"id": "end"}, hooks=[hooks]
    )
    state = await _at_tool(engine)
    hooks.clear()
    moved = await engine.navigate(state, failed("charge", "card declined"))
    assert moved.current_node_id == "oops"
    assert moved.status is Status.ACTIVE and moved.pending_tool_call == ""
    assert "out" not in moved.context and "tool_result" not in moved.context
    assert moved.system_context == state.system_context
    assert hooks.seen() == [("tool_return", "charge"), ("node_leave", "act"), ("node_enter", "oops")]
    assert hooks.events[0].is_error


async def test_3_4_3_error_goes_to_default_error_node() -> None:
    engine = make_engine(_START, _tool(to="end"), {"id": "error"}, {"id": "end"}, default_error_node="error")
    moved = await engine.navigate(await _at_tool(engine), failed("charge"))
    assert moved.current_node_id == "error"


async def test_3_4_3_error_with_on_error_rollback_starts_rollback() -> None:
    hooks = Recorder()
    engine = make_engine(_START, _tool(on_error="rollback", to="end"), {"id": "end"}, hooks=[hooks])
    state = await _at_tool(engine)
    hooks.clear()
    done = await engine.navigate(state, failed("charge"))
    # The failed node is popped without compensation; start has no undo.
    assert done.status is Status.TERMINATED and done.current_node_id == "" and done.history == []
    assert hooks.seen() == [("tool_return", "charge"), ("node_leave", "act")]


@pytest.mark.parametrize(
    ("result", "cause"),
    [
        (failed("charge", "card declined"), "card declined"),
        (ToolResult(id="charge", result=42, is_error=True), "42"),
    ],
)
async def test_3_4_3_unhandled_error_halts(result: ToolResult, cause: str) -> None:
    hooks = Recorder()
    engine = make_engine(_START, _tool(to="end"), {"id": "end"}, hooks=[hooks])
    state = await _at_tool(engine)
    before = state.to_json()
    hooks.clear()
    with pytest.raises(UnhandledToolError) as info:
        await engine.navigate(state, result)
    err = info.value
    assert (err.node_id, err.tool_name, err.cause) == ("act", "charge", cause)
    assert "Execution halted" in err.message and "on_error" in err.message
    assert state.to_json() == before
    assert hooks.seen() == [("tool_return", "charge")]


# --- success ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"status": "paid", "_id": "inner"}, {"_id": "inner", "status": "paid"}),
        ({"n": 1}, {"_id": "charge", "n": 1}),
        ([1, 2], {"_id": "charge", "result": [1, 2]}),
        (None, {"_id": "charge", "result": None}),
        ("done", {"_id": "charge", "result": "done"}),
    ],
)
async def test_3_4_4_tool_result_map(value: Any, expected: dict[str, Any]) -> None:
    engine = make_engine(_START, _tool(save_to="raw", to="end"), {"id": "end"})
    moved = await engine.navigate(await _at_tool(engine), ok("charge", value))
    assert moved.context["tool_result"] == expected
    assert moved.context["raw"] == value
    assert moved.system_context["ans"] == value
    assert moved.current_node_id == "end"


async def test_3_4_4_only_latest_tool_result_kept_and_save_to_tool_result_overwrites() -> None:
    engine = make_engine(
        {"id": "start", "do": {"name": "a"}, "to": "b"},
        {"id": "b", "do": {"name": "b"}, "save_to": "tool_result", "to": "end"},
        {"id": "end"},
    )
    state = await engine.start("s")
    state = await engine.navigate(state, ok("a", {"x": 1}))
    assert state.context["tool_result"] == {"_id": "a", "x": 1}
    state = await engine.navigate(state, ok("b", {"y": 2}))
    assert state.context["tool_result"] == {"y": 2}


async def test_3_4_4_transitions_evaluate_raw_result_and_refusal_goes_to_on_denied() -> None:
    node = _tool(
        on_denied="refused", transitions=[{"to": "big", "condition": "input.amount > 10"}], to="small"
    )
    engine = make_engine(_START, node, *({"id": i} for i in ("refused", "big", "small")))
    assert (
        await engine.navigate(await _at_tool(engine), ok("charge", {"amount": 50}))
    ).current_node_id == "big"
    assert (
        await engine.navigate(await _at_tool(engine), ok("charge", {"amount": 5}))
    ).current_node_id == "small"
    assert (await engine.navigate(await _at_tool(engine), ok("charge", False))).current_node_id == "refused"
    assert (await engine.navigate(await _at_tool(engine), ok("charge", "No"))).current_node_id == "refused"


async def test_3_4_4_hooks_on_success() -> None:
    hooks = Recorder()
    engine = make_engine(_START, _tool(to="end"), {"id": "end"}, hooks=[hooks])
    state = await _at_tool(engine)
    hooks.clear()
    await engine.navigate(state, ok("charge", 1))
    assert hooks.seen() == [("tool_return", "charge"), ("node_leave", "act"), ("node_enter", "end")]
    assert hooks.events[0].data == ok("charge", 1)


async def test_3_4_4_success_with_nothing_matched_stays_active_on_tool_node() -> None:
    engine = make_engine(
        _START, _tool(transitions=[{"to": "end", "condition": "input == 'ok'"}]), {"id": "end"}
    )
    moved = await engine.navigate(await _at_tool(engine), ok("charge", "meh"))
    assert moved.current_node_id == "act"
    assert moved.status is Status.ACTIVE and moved.pending_tool_call == ""


async def test_3_4_4_successful_tool_on_terminal_node_terminates() -> None:
    engine = make_engine(_START, _tool())
    done = await engine.navigate(await _at_tool(engine), ok("charge"))
    assert done.status is Status.TERMINATED and done.terminated


# --- rollback ------------------------------------------------------------------------------------

_SAGA = [
    {"id": "start", "to": "book"},
    {
        "id": "book",
        "do": {"name": "book_flight", "args": {"who": "{{ .who }}"}},
        "undo": {"name": "cancel_flight", "args": {"ref": "{{ .tool_result.ref }}"}},
        "to": "note",
    },
    {"id": "note", "wait": True, "save_to": "note", "to": "pay"},
    {"id": "pay", "do": {"name": "charge"}, "on_error": "rollback", "to": "end"},
    {"id": "end"},
]


async def _saga_at_pay(engine: Any) -> State:
    state = await engine.start("s", {"who": "ann"})
    state = await engine.navigate(state, "")
    state = await engine.navigate(state, ok("book_flight", {"ref": "F1"}))
    state = await engine.navigate(state, "window seat")
    assert state.current_node_id == "pay"
    return state


async def test_7_1_tool_error_with_on_error_rollback_unwinds_to_compensations() -> None:
    hooks = Recorder()
    engine = make_engine(*_SAGA, hooks=[hooks])
    state = await _saga_at_pay(engine)
    hooks.clear()
    rolling = await engine.navigate(state, failed("charge"))
    assert rolling.status is Status.ROLLING_BACK
    assert rolling.current_node_id == "book"
    assert rolling.pending_tool_call == "cancel_flight"
    assert rolling.history == ["start", "book"]
    assert rolling.context["note"] == "window seat"  # context preserved
    call = (await engine.render(rolling)).tool_call()
    assert call is not None and call.name == "cancel_flight" and call.args == {"ref": "F1"}
    assert hooks.seen() == [("tool_return", "charge"), ("node_leave", "pay"), ("tool_call", "cancel_flight")]
    hooks.clear()
    done = await engine.navigate(rolling, ok("cancel_flight"))
    assert done.status is Status.TERMINATED and done.terminated
    assert done.current_node_id == "" and done.history == []
    assert hooks.events == []  # no hooks for undo results


async def test_7_3_failed_or_denied_undo_still_counts_as_done() -> None:
    engine = make_engine(*_SAGA)
    rolling = await engine.navigate(await _saga_at_pay(engine), failed("charge"))
    for result in (failed("cancel_flight"), denied("cancel_flight")):
        done = await engine.navigate(rolling, result)
        assert done.status is Status.TERMINATED


async def test_7_3_rolling_back_requires_matching_tool_result() -> None:
    from trellis.errors import ExpectedToolResult, ToolResultMismatch

    engine = make_engine(*_SAGA)
    rolling = await engine.navigate(await _saga_at_pay(engine), failed("charge"))
    with pytest.raises(ExpectedToolResult):
        await engine.navigate(rolling, "x")
    with pytest.raises(ToolResultMismatch):
        await engine.navigate(rolling, ok("charge"))


async def test_7_2_node_that_succeeded_then_went_to_rollback_is_compensated_fix_17_10() -> None:
    engine = make_engine(
        {
            "id": "start",
            "do": {"name": "reserve"},
            "undo": {"name": "release"},
            "transitions": [{"to": "rollback", "condition": "input == 'abort'"}],
            "to": "end",
        },
        {"id": "end"},
    )
    state = await engine.start("s")
    rolling = await engine.navigate(state, ok("reserve", "abort"))
    assert rolling.status is Status.ROLLING_BACK
    assert rolling.current_node_id == "start"
    assert rolling.pending_tool_call == "release"
    done = await engine.navigate(rolling, ok("release"))
    assert done.status is Status.TERMINATED and done.history == []


async def test_7_2_plain_node_going_to_rollback_is_popped_without_compensation() -> None:
    engine = make_engine(
        {"id": "start", "do": {"name": "a"}, "undo": {"name": "undo_a"}, "to": "ask"},
        {
            "id": "ask",
            "wait": True,
            "undo": {"name": "never"},
            "options": [{"text": "cancel", "to": "rollback"}],
        },
    )
    state = await engine.navigate(await engine.start("s"), ok("a"))
    rolling = await engine.navigate(state, "cancel")
    assert rolling.current_node_id == "start"
    assert rolling.pending_tool_call == "undo_a"


async def test_7_3_repeated_history_entries_compensated_per_occurrence() -> None:
    engine = make_engine(
        {"id": "start", "to": "work"},
        {
            "id": "work",
            "do": {"name": "step"},
            "undo": {"name": "unstep"},
            "transitions": [
                {"to": "work", "condition": "input == 'again'"},
                {"to": "rollback", "condition": "input == 'stop'"},
            ],
        },
    )
    state = await engine.navigate(await engine.start("s"), "")
    state = await engine.navigate(state, ok("step", "again"))
    state = await engine.navigate(state, ok("step", "stop"))
    seen = []
    for _ in range(5):
        if state.status is not Status.ROLLING_BACK:
            break
        seen.append((state.current_node_id, state.pending_tool_call, len(state.history)))
        state = await engine.navigate(state, ok("unstep"))
    assert seen == [("work", "unstep", 3), ("work", "unstep", 2)]
    assert state.status is Status.TERMINATED


async def test_7_3_undo_without_id_is_awaited_under_its_name_fix_17_10() -> None:
    engine = make_engine(
        Node(id="start", transitions=(Transition("act"),)),
        Node(
            id="act",
            do=ToolCall(id="", name="go"),
            undo=ToolCall(id="", name="back"),
            transitions=(Transition("rollback", "input == 'abort'"),),
        ),
    )
    state = await engine.navigate(await engine.start("s"), "")
    rolling = await engine.navigate(state, ok("go", "abort"))
    assert rolling.pending_tool_call == "back"
    call = (await engine.render(rolling)).tool_call()
    assert call is not None and call.id == "back"
    assert (await engine.navigate(rolling, ok("back"))).status is Status.TERMINATED


async def test_7_3_unloadable_node_during_unwind_is_an_error() -> None:
    engine = make_engine({"id": "start", "to": "rollback"})
    state = State.new("s", "start")
    state.history = ["gone", "start"]
    with pytest.raises(NodeLoadError, match="rollback failed: could not load node gone"):
        await engine.navigate(state, "")


async def test_7_idempotency_key_of_undo_uses_undo_name() -> None:
    from trellis.engine.idempotency import idempotency_key

    engine = make_engine(*_SAGA)
    rolling = await engine.navigate(await _saga_at_pay(engine), failed("charge"))
    call = (await engine.render(rolling)).tool_call()
    assert call is not None
    assert call.idempotency_key == idempotency_key("s", "book", 2, "cancel_flight")


_OWN_UNDO: list[dict[str, Any]] = [
    {"id": "start", "to": "book"},
    {"id": "book", "do": {"name": "book_flight"}, "undo": {"name": "cancel_flight"}, "to": "pay"},
    {
        "id": "pay",
        "do": {"name": "charge"},
        "undo": {"name": "refund"},
        "on_error": "rollback",
        "on_denied": "rollback",
        "to": "end",
    },
    {"id": "end"},
]


@pytest.mark.parametrize("outcome", [failed, denied], ids=["error", "denied"])
async def test_7_a_node_whose_tool_failed_is_not_compensated(outcome: Any) -> None:
    # Its do did not succeed, so its own undo (refund) must not run: the rollback starts before it.
    engine = make_engine(*_OWN_UNDO)
    state = await engine.navigate(await engine.start("s"), "")
    state = await engine.navigate(state, ok("book_flight"))
    assert state.current_node_id == "pay"
    rolling = await engine.navigate(state, outcome("charge"))
    assert rolling.status is Status.ROLLING_BACK
    assert (rolling.current_node_id, rolling.pending_tool_call) == ("book", "cancel_flight")
    assert rolling.history == ["start", "book"]


async def test_3_4_3_an_unhandled_tool_error_names_the_tool_not_the_call_id() -> None:
    engine = make_engine({"id": "start", "do": {"name": "charge", "id": "pay-1"}, "to": "end"}, {"id": "end"})
    state = await engine.start("s")
    assert state.pending_tool_call == "pay-1"
    with pytest.raises(UnhandledToolError, match="charge") as caught:
        await engine.navigate(state, failed("pay-1", "card declined"))
    assert "card declined" in str(caught.value)
    assert caught.value.tool_name == "charge"


async def test_3_4_4_a_tool_result_is_refused_when_the_nodes_context_contract_is_not_met() -> None:
    engine = make_engine(
        {"id": "start", "wait": True, "to": "pay"},
        {"id": "pay", "do": {"name": "charge"}, "required_context": ["card"], "to": "end"},
        {"id": "end"},
    )
    state = await engine.navigate(await engine.start("s"), "go")
    assert state.current_node_id == "pay"
    with pytest.raises(ContextValidationError, match="card"):
        await engine.navigate(state, ok("charge"))


async def test_12_a_tool_call_whose_arguments_cannot_be_rendered_reports_them_as_written() -> None:
    hooks = Recorder()
    engine = make_engine(
        {"id": "start", "wait": True, "to": "act"},
        {"id": "act", "do": {"name": "t", "args": {"a": "{{ .x ", "b": 2}}, "to": "end"},
        {"id": "end"},
        hooks=[hooks],
    )
    await engine.navigate(await engine.start("s"), "go")
    calls = [e for e in hooks.events if e.kind is HookKind.TOOL_CALL]
    assert [(c.tool_name, c.data) for c in calls] == [("t", {"a": "{{ .x ", "b": 2})]
