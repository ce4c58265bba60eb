"""Domain ↔ protobuf conversion: values survive the wire with their types."""

from __future__ import annotations

import pytest

from trellis.api import convert
from trellis.api.v1 import types_pb2 as pb
from trellis.domain import (
    Action,
    ActionType,
    FormatItem,
    InputRequest,
    Node,
    RenderResult,
    State,
    StateDiff,
    Status,
    StepResult,
    Tool,
    ToolCall,
    ToolResult,
    Transition,
)
from trellis.errors import InvalidInput


def test_state_round_trip_keeps_ints_nested_values_and_revision() -> None:
    state = State(
        session_id="s1",
        current_node_id="ask",
        status=Status.WAITING_FOR_TOOL,
        pending_tool_call="call-1",
        context={"count": 41, "price": 2.5, "tags": ["a", None, True], "user": {"age": 36}},
        system_context={"ans": "yes"},
        locale="pt-BR",
        history=["start", "ask"],
        terminated=False,
        revision=7,
    )
    wire = convert.state_to_proto(state).SerializeToString()
    back = convert.state_from_proto(pb.State.FromString(wire))
    assert back == state
    assert type(back.context["count"]) is int


def test_node_round_trip() -> None:
    node = Node(
        id="pay",
        type="tool",
        save_to="receipt",
        required_context=("amount",),
        default_context={"currency": "EUR", "retries": 3},
        context_schema={"amount": "int"},
        content="Paying {{ .amount }}",
        metadata={"owner": "billing"},
        transitions=(Transition("done", "input == 'ok'"), Transition("fail")),
        on_error="rollback",
        on_denied="cancelled",
        on_signal={"interrupt": "bye"},
        input_type="choice",
        input_options=("a", "b"),
        input_default="a",
        do=ToolCall(id="charge", name="charge", args={"amount": 10}, metadata=None),
        undo=ToolCall(id="refund", name="refund", args=None, metadata={"k": "v"}),
        tools=(Tool(name="lookup", description="find", parameters={"type": "object"}),),
        messages={"en": (FormatItem("Hello"), FormatItem("VIP", "vip == true"))},
        timeout="1m30s",
        source="pay.md",
    )
    back = convert.node_from_proto(pb.Node.FromString(convert.node_to_proto(node).SerializeToString()))
    assert back == node
    assert convert.node_to_proto(node).timeout.seconds == 90


def test_actions_and_step_round_trip() -> None:
    render = RenderResult(
        actions=(
            Action(ActionType.RENDER_CONTENT, "Hi"),
            Action(ActionType.REQUEST_INPUT, InputRequest("confirm", ("yes", "no"), "no", 1.5)),
            Action(ActionType.CALL_TOOL, ToolCall("c1", "greet", {"n": 1}, {"m": "x"}, "key-1")),
            Action(ActionType.SYSTEM_MESSAGE, "note"),
        ),
        terminal=False,
    )
    step = StepResult(State.new("s", "start"), render)
    msg = convert.step_to_proto(step)
    assert msg.actions[1].request_input.timeout.seconds == 1
    assert msg.actions[1].request_input.timeout.nanos == 500_000_000
    back = convert.step_from_proto(pb.Step.FromString(msg.SerializeToString()))
    assert back == step


def test_inputs_keep_their_types_and_text_comes_as_sent() -> None:
    # Sanitising text is the host's job, done once (SessionManager, Engine service).
    assert convert.input_from_proto(convert.input_to_proto("a\x1bb"), 100) == "a\x1bb"
    assert convert.input_from_proto(convert.input_to_proto(42), 100) == 42
    result = ToolResult("c1", {"ok": 1}, is_denied=True)
    assert convert.input_from_proto(convert.input_to_proto(result), 100) == result
    assert convert.input_from_proto(pb.Input(), 100) == ""
    with pytest.raises(InvalidInput, match="size=4 limit=3"):
        convert.input_from_proto(pb.Input(value_json="1234"), 3)
    with pytest.raises(InvalidInput, match=r"tool_result\.id"):
        convert.input_from_proto(pb.Input(tool_result=pb.ToolResult()), 100)


def test_bad_json_from_a_client_names_the_field() -> None:
    with pytest.raises(InvalidInput, match=r"state\.context_json: invalid JSON"):
        convert.state_from_proto(pb.State(session_id="s", context_json="{nope"))
    with pytest.raises(InvalidInput, match=r"state\.context_json: expected a JSON object"):
        convert.state_from_proto(pb.State(session_id="s", context_json="[1]"))


def test_diff_round_trip_keeps_absent_parts_absent() -> None:
    diff = StateDiff(session_id="s", status=Status.TERMINATED, context={"gone": None}, terminated=True)
    back = convert.diff_from_proto(pb.StateDiff.FromString(convert.diff_to_proto(diff).SerializeToString()))
    assert back == diff
    full = StateDiff("s", "n", Status.ACTIVE, None, ("a", "n"), None)
    assert convert.diff_from_proto(convert.diff_to_proto(full)) == full
