"""Navigate: dispatch, the input path, effective input, next node, transition_to, system
context (docs/engine.md, "Input", "Transitions", "Context")."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.domain import State, Status
from trellis.errors import (
    ContextValidationError,
    ExpectedToolResult,
    InvalidConfirmation,
    NodeNotFound,
    ReservedNamespace,
    SessionTerminated,
    ToolResultMismatch,
    UnexpectedToolResult,
)

from .helpers import Recorder, make_engine, ok

# --- dispatch ---------------------------------------------------------------------------


async def test_3_4_navigate_without_state_is_an_error() -> None:
    engine = make_engine({"id": "start"})
    with pytest.raises(Exception, match="state"):
        await engine.navigate(None, "x")  # type: ignore[arg-type]


async def test_3_4_waiting_for_tool_requires_a_tool_result() -> None:
    engine = make_engine({"id": "start", "do": {"name": "t"}, "to": "end"}, {"id": "end"})
    state = await engine.start("s")
    with pytest.raises(ExpectedToolResult, match="expected ToolResult input"):
        await engine.navigate(state, "hello")


async def test_3_4_tool_result_id_must_match_pending_call() -> None:
    engine = make_engine({"id": "start", "do": {"name": "t"}, "to": "end"}, {"id": "end"})
    state = await engine.start("s")
    with pytest.raises(ToolResultMismatch, match="tool result ID other does not match pending call t"):
        await engine.navigate(state, ok("other"))


async def test_3_4_tool_result_without_pending_call_is_rejected() -> None:
    engine = make_engine({"id": "start", "to": "end"}, {"id": "end"})
    state = await engine.start("s")
    with pytest.raises(UnexpectedToolResult):
        await engine.navigate(state, ok("t"))


async def test_3_4_navigating_a_terminated_state_raises_fix_17_8() -> None:
    engine = make_engine({"id": "start"})
    state = await engine.start("s")
    done = await engine.navigate(state, "")
    assert done.status is Status.TERMINATED and done.terminated
    with pytest.raises(SessionTerminated):
        await engine.navigate(done, "")


# --- input path ----------------------------------------------------------------------------


async def test_3_4_1_step3_context_validated_before_the_input() -> None:
    engine = make_engine(
        {"id": "start", "required_context": ["name"], "save_to": "name", "to": "end"}, {"id": "end"}
    )
    state = await engine.start("s")
    with pytest.raises(ContextValidationError):
        await engine.navigate(state, "Ann")


async def test_3_4_1_step5_sys_ans_and_save_to() -> None:
    engine = make_engine({"id": "start", "wait": True, "save_to": "user.name", "to": "end"}, {"id": "end"})
    state = await engine.start("s")
    moved = await engine.navigate(state, "Ann")
    assert moved.system_context["ans"] == "Ann"
    assert moved.context == {"user.name": "Ann"}  # dotted key stored literally


async def test_3_4_1_step5_save_to_applied_even_without_match() -> None:
    engine = make_engine(
        {"id": "start", "wait": True, "save_to": "pick", "options": [{"text": "a", "to": "end"}]},
        {"id": "end"},
    )
    state = await engine.start("s")
    stayed = await engine.navigate(state, "zzz")
    assert stayed.current_node_id == "start"
    assert stayed.context["pick"] == "zzz"
    assert stayed.history == ["start"]
    assert stayed.status is Status.ACTIVE


@pytest.mark.parametrize("target", ["sys", "sys.token"])
async def test_3_4_1_step5_save_to_sys_is_rejected(target: str) -> None:
    engine = make_engine({"id": "start", "wait": True, "save_to": target, "to": "end"}, {"id": "end"})
    state = await engine.start("s")
    with pytest.raises(ReservedNamespace, match="reserved namespace 'sys' in node start"):
        await engine.navigate(state, "x")


@pytest.mark.parametrize("target", ["system", "sys_x", "sysadmin"])
async def test_10_save_to_names_that_merely_start_with_sys_are_allowed(target: str) -> None:
    engine = make_engine({"id": "start", "wait": True, "save_to": target, "to": "end"}, {"id": "end"})
    moved = await engine.navigate(await engine.start("s"), "x")
    assert moved.context[target] == "x"


@pytest.mark.parametrize("spelling", ["rollback", "Rollback", "ROLLBACK"])
async def test_3_4_1_step7_rollback_target_any_case(spelling: str) -> None:
    hooks = Recorder()
    engine = make_engine({"id": "start", "to": spelling}, hooks=[hooks])
    state = await engine.start("s")
    hooks.clear()
    done = await engine.navigate(state, "")
    assert done.status is Status.TERMINATED
    assert done.current_node_id == ""
    assert done.history == []
    assert hooks.seen() == [("node_leave", "start")]


async def test_3_4_1_step8_node_without_transitions_terminates() -> None:
    hooks = Recorder()
    engine = make_engine({"id": "start"}, hooks=[hooks])
    state = await engine.start("s")
    hooks.clear()
    done = await engine.navigate(state, "")
    assert done.status is Status.TERMINATED and done.terminated
    assert done.current_node_id == "start" and done.history == ["start"]
    assert hooks.seen() == [("node_leave", "start")]


async def test_3_4_1_step9_transition_moves_and_appends_history() -> None:
    hooks = Recorder()
    engine = make_engine({"id": "start", "to": "next"}, {"id": "next", "to": "start"}, hooks=[hooks])
    state = await engine.start("s")
    hooks.clear()
    one = await engine.navigate(state, "")
    two = await engine.navigate(one, "")
    assert two.current_node_id == "start"
    assert two.history == ["start", "next", "start"]
    assert hooks.seen() == [
        ("node_leave", "start"),
        ("node_enter", "next"),
        ("node_leave", "next"),
        ("node_enter", "start"),
    ]


async def test_3_4_1_step10_nothing_matched_keeps_node_and_fires_no_hooks() -> None:
    hooks = Recorder()
    engine = make_engine(
        {"id": "start", "options": [{"text": "go", "to": "end"}]}, {"id": "end"}, hooks=[hooks]
    )
    state = await engine.start("s")
    hooks.clear()
    stayed = await engine.navigate(state, "nope")
    assert (stayed.current_node_id, stayed.history, stayed.status) == ("start", ["start"], Status.ACTIVE)
    assert hooks.events == []


async def test_3_4_navigate_returns_new_state_and_leaves_input_alone() -> None:
    engine = make_engine({"id": "start", "save_to": "a", "to": "end"}, {"id": "end"})
    state = await engine.start("s")
    before = state.to_json()
    moved = await engine.navigate(state, "x")
    assert moved is not state
    assert state.to_json() == before
    assert moved.history is not state.history and moved.context is not state.context


async def test_17_22_history_is_not_shared_between_two_navigations() -> None:
    engine = make_engine(
        {"id": "start", "options": [{"text": "a", "to": "a"}, {"text": "b", "to": "b"}]},
        {"id": "a"},
        {"id": "b"},
    )
    state = await engine.start("s")
    to_a = await engine.navigate(state, "a")
    to_b = await engine.navigate(state, "b")
    assert to_a.history == ["start", "a"]
    assert to_b.history == ["start", "b"]
    assert state.history == ["start"]


# --- effective input (Input) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Y", "yes"),
        (" yes ", "yes"),
        ("TRUE", "yes"),
        ("1", "yes"),
        (True, "yes"),
        (1, "yes"),
        ("n", "no"),
        ("No", "no"),
        ("false", "no"),
        ("0", "no"),
        (False, "no"),
        ("", "yes"),
        (None, "yes"),
    ],
)
async def test_3_5_confirm_inputs_are_normalised(raw: Any, expected: str) -> None:
    engine = make_engine(
        {"id": "start", "input_type": "confirm", "save_to": "ok", "to": "end"}, {"id": "end"}
    )
    moved = await engine.navigate(await engine.start("s"), raw)
    assert moved.context["ok"] == expected
    assert moved.system_context["ans"] == expected


async def test_3_5_confirm_empty_uses_default() -> None:
    engine = make_engine(
        {"id": "start", "input_type": "confirm", "input_default": "no", "save_to": "ok", "to": "end"},
        {"id": "end"},
    )
    moved = await engine.navigate(await engine.start("s"), "")
    assert moved.context["ok"] == "no"


async def test_3_5_invalid_confirmation_is_an_error() -> None:
    engine = make_engine({"id": "start", "input_type": "confirm", "to": "end"}, {"id": "end"})
    with pytest.raises(
        InvalidConfirmation, match="invalid confirmation input: 'maybe' \\(expected y/n/yes/no\\)"
    ):
        await engine.navigate(await engine.start("s"), "maybe")


@pytest.mark.parametrize(
    ("raw", "expected"), [("", "blue"), (None, "blue"), (" ", " "), ("red", "red"), (7, 7)]
)
async def test_3_5_input_default_applies_only_to_empty_input(raw: Any, expected: Any) -> None:
    engine = make_engine(
        {"id": "start", "input_type": "text", "input_default": "blue", "save_to": "c", "to": "end"},
        {"id": "end"},
    )
    moved = await engine.navigate(await engine.start("s"), raw)
    assert moved.context["c"] == expected


async def test_3_5_non_string_input_kept_as_is() -> None:
    engine = make_engine({"id": "start", "save_to": "v", "to": "end"}, {"id": "end"})
    moved = await engine.navigate(await engine.start("s"), {"k": [1, 2]})
    assert moved.context["v"] == {"k": [1, 2]}


# --- next node (Transitions) ------------------------------------------------------------------

_ROUTER = {
    "id": "start",
    "wait": True,
    "on_denied": "refused",
    "transitions": [{"to": "fallback"}, {"to": "exact", "condition": "input == 'no'"}],
    "options": [{"text": "Go", "to": "went"}],
}
_TARGETS = [{"id": i} for i in ("refused", "fallback", "exact", "went")]


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        ("go", "went"),  # conditional (from options) first
        ("no", "exact"),  # conditional beats refusal
        ("NO ", "exact"),
        ("deny", "refused"),  # refusal → on_denied before unconditional
        (" N ", "refused"),
        (False, "refused"),
        ("false", "refused"),
        ("0", "fallback"),  # 0 is not a refusal
        ("other", "fallback"),  # first unconditional
    ],
)
async def test_3_6_next_node_priority(raw: Any, target: str) -> None:
    engine = make_engine(_ROUTER, *_TARGETS)
    moved = await engine.navigate(await engine.start("s"), raw)
    assert moved.current_node_id == target


async def test_3_6_first_matching_condition_wins() -> None:
    engine = make_engine(
        {
            "id": "start",
            "transitions": [
                {"to": "a", "condition": "input == 'x'"},
                {"to": "b", "condition": "input == 'x'"},
            ],
        },
        {"id": "a"},
        {"id": "b"},
    )
    assert (await engine.navigate(await engine.start("s"), "x")).current_node_id == "a"


# --- transition_to (Transitions) ------------------------------------------------------------


async def test_3_7_defaults_fill_only_absent_keys() -> None:
    engine = make_engine(
        {"id": "start", "to": "next"},
        {"id": "next", "default_context": {"a": "default", "b": "default", "c": "default"}},
    )
    state = await engine.start("s", {"a": "mine", "b": None})
    moved = await engine.navigate(state, "")
    assert moved.context == {"a": "mine", "b": None, "c": "default"}


async def test_3_7_target_with_do_waits_for_tool() -> None:
    engine = make_engine(
        {"id": "start", "to": "act"}, {"id": "act", "do": {"name": "send"}, "to": "end"}, {"id": "end"}
    )
    moved = await engine.navigate(await engine.start("s"), "")
    assert moved.status is Status.WAITING_FOR_TOOL
    assert moved.pending_tool_call == "send"


async def test_3_7_missing_target_fails_the_whole_navigation() -> None:
    hooks = Recorder()
    engine = make_engine({"id": "start", "save_to": "x", "to": "ghost"}, hooks=[hooks])
    state = await engine.start("s")
    hooks.clear()
    before = state.to_json()
    with pytest.raises(NodeNotFound, match="failed to load next node ghost"):
        await engine.navigate(state, "v")
    assert state.to_json() == before
    assert hooks.events == []  # no hook for an operation that failed


async def test_3_7_target_requirements_are_checked_by_render_not_on_entry() -> None:
    engine = make_engine({"id": "start", "to": "needs"}, {"id": "needs", "required_context": ["token"]})
    moved = await engine.navigate(await engine.start("s"), "")
    assert moved.current_node_id == "needs"
    with pytest.raises(ContextValidationError):
        await engine.render(moved)


# --- system context (Context) ----------------------------------------------------------------


async def test_10_sys_ans_is_last_effective_input_and_visible_to_templates() -> None:
    engine = make_engine(
        {"id": "start", "wait": True, "to": "echo"},
        {"id": "echo", "content": "you said {{ .sys.ans }}", "on_interrupt": "start"},
    )
    moved = await engine.navigate(await engine.start("s"), "hello")
    assert (await engine.render(moved)).actions[0].payload == "you said hello"
    signalled = await engine.signal(moved, "interrupt")
    assert signalled.system_context["ans"] == "hello"  # signals leave sys.ans alone


async def test_3_4_status_empty_or_active_takes_input_path() -> None:
    engine = make_engine({"id": "start", "to": "end"}, {"id": "end"})
    state = State.from_json({"session_id": "s", "current_node_id": "start", "history": ["start"]})
    moved = await engine.navigate(state, "")
    assert moved.current_node_id == "end"


async def test_3_7_container_defaults_are_private_to_each_session() -> None:
    engine = make_engine(
        {"id": "start", "default_context": {"tags": ["a"]}, "to": "next"},
        {"id": "next", "default_context": {"seen": {"n": 1}}},
    )
    first = await engine.navigate(await engine.start("one"), "")
    first.context["tags"].append("mine")
    first.context["seen"]["n"] = 99
    second = await engine.navigate(await engine.start("two"), "")
    assert second.context == {"tags": ["a"], "seen": {"n": 1}}
