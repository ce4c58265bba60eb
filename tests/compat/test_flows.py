"""Compatibility with the Go original's own flows (../shared/compat/flows).

Every flow loads, passes `validate` (by the rule in docs/cli.md: errors fail,
warnings do not), renders its entry node and can be walked with stand-in tools;
then the behaviours the flows were written to show are checked one by one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.compat_flows import (
    CONTEXTS,
    FLOWS,
    StandInTools,
    flow_names,
    open_engine,
    open_manager,
    require_flows,
    walk,
)
from trellis.adapters.directory_loader import entry_node_id, has_default_error_node
from trellis.cli.validation import validate_flow
from trellis.domain import ActionType, Status, StepResult, ToolResult
from trellis.errors import ContextTypeValidationError, ContextValidationError, NodeLoadError

# The one flow of the original that is broken as shipped: its start.md holds three
# "documents" separated by ---, but a node file is one document, so step2 and end
# exist only as text in start's body. The original's validate reports it too.
KNOWN_BROKEN = {
    "observability-introspection": {("observability-introspection/start.md", "transitions[0].to")},
}


@pytest.fixture(scope="module", autouse=True)
def flows() -> Path:
    return require_flows()


def _contents(step: StepResult) -> str:
    return "".join(str(a.payload) for a in step.render.actions if a.type is ActionType.RENDER_CONTENT)


@pytest.mark.in_process_only(reason="validates the flow's files: no sessions")
@pytest.mark.parametrize("name", flow_names())
async def test_every_flow_validates(name: str) -> None:
    root = FLOWS / name
    error_node = "error" if has_default_error_node(root) else ""
    report = await validate_flow(root, entry_node_id(root), default_error_node=error_node)
    assert report.node_count > 0
    found = {(p.source, p.field) for p in report.errors}
    assert found == KNOWN_BROKEN.get(name, set()), [str(p) for p in report.errors]


@pytest.mark.parametrize("name", flow_names())
async def test_every_flow_renders_and_walks(name: str) -> None:
    tools = StandInTools()
    manager = open_manager(name, tools)
    if name in KNOWN_BROKEN:
        # Its entry passes straight on to a node that does not exist.
        with pytest.raises(NodeLoadError, match="failed to load next node step2"):
            await manager.start("first", CONTEXTS.get(name, {}))
        return
    first = await manager.start("first", CONTEXTS.get(name, {}))
    assert first.render.actions, f"{name}: the entry renders nothing"
    last = await walk(manager, CONTEXTS.get(name, {}))
    assert last.state.history or last.state.status is Status.TERMINATED


# --- the behaviours each example shows ------------------------------------------------------


async def test_original_tour_end_to_end() -> None:
    manager = open_manager("tour")
    step = await manager.start("t", {})
    assert step.state.current_node_id == "start"
    assert "# Welcome to Trellis Tour" in _contents(step)
    request = step.render.input_request()
    assert request is not None and request.type == "choice" and request.options == ("Inputs",)
    step = await manager.navigate("t", "")  # Enter: the unconditional edge to the JSON node
    assert step.state.current_node_id == "choice"
    assert "You have reached a crossroads (defined in JSON)." in _contents(step)
    step = await manager.navigate("t", "no")
    assert step.state.current_node_id == "try-again"
    step = await manager.navigate("t", "")
    assert step.state.current_node_id == "start"
    step = await manager.navigate("t", "inputs")  # options match case-insensitively
    assert step.state.current_node_id == "inputs"
    request = step.render.input_request()
    assert request is not None and request.options == ("Go to End", "Go Loop")
    assert request.default == "Go to End"
    step = await manager.navigate("t", "")  # the default
    assert step.state.current_node_id == "success"
    assert "You chose wisely." in _contents(step)
    step = await manager.navigate("t", "")
    assert step.state.status is Status.TERMINATED
    assert step.state.history == ["start", "choice", "try-again", "start", "inputs", "success"]


async def test_compensation_native_rolls_back_newest_first() -> None:
    tools = StandInTools()
    step = await open_manager("compensation-native", tools).start("s", {})
    assert tools.calls == [
        ("reserve_hotel", {"city": "Paris"}),
        ("book_flight", {"destination": "CDG"}),
        ("rent_car", {"type": "compact"}),
        ("cancel_flight", {"id": "F-CDG"}),
        ("cancel_hotel", {"id": "H-Paris"}),
    ]
    assert step.state.status is Status.TERMINATED
    assert step.state.current_node_id == ""
    assert step.state.history == []


async def test_compensation_durable_waits_for_a_signal_or_rolls_back_on_rejection() -> None:
    tools = StandInTools()
    manager = open_manager("compensation-durable", tools)
    step = await manager.start("ok", {})
    assert step.state.current_node_id == "02_wait"
    step = await manager.signal("ok", "manager_approval")
    assert step.state.status is Status.TERMINATED
    assert step.state.context["flight"] == {"id": "F-CDG"}

    await manager.start("no", {})
    tools.calls.clear()
    step = await manager.navigate("no", "reject")
    assert tools.names() == ["reject_request", "cancel_hotel"]
    assert tools.calls[-1] == ("cancel_hotel", {"id": "H-Paris"})
    assert step.state.status is Status.TERMINATED and step.state.current_node_id == ""


async def test_compensation_manual_follows_on_error_through_the_cancellations() -> None:
    tools = StandInTools()
    step = await open_manager("compensation-manual", tools).start("m", {})
    assert tools.names() == [
        "book_flight",
        "book_hotel",
        "book_car",
        "cancel_car",
        "cancel_hotel",
        "cancel_flight",
    ]
    assert step.state.current_node_id == "end_rollback"
    assert step.state.status is Status.TERMINATED
    assert "# 🔄 Rollback Complete" in _contents(step)


@pytest.mark.parametrize(("answer", "target"), [("", "refused"), ("y", "accepted"), ("NO", "refused")])
async def test_confirm_demo(answer: str, target: str) -> None:
    manager = open_manager("confirm-demo")
    await manager.start("c", {})
    step = await manager.navigate("c", answer)
    assert step.state.current_node_id == target


async def test_interrupt_demo() -> None:
    manager = open_manager("interrupt-demo")
    await manager.start("i", {})
    step = await manager.signal("i", "interrupt")
    assert step.state.current_node_id == "confirm_exit"
    step = await manager.navigate("i", "n")
    assert step.state.current_node_id == "start"
    await manager.signal("i", "interrupt")
    step = await manager.navigate("i", "yes")
    assert step.state.current_node_id == "exit_now"
    assert step.state.status is Status.TERMINATED


async def test_signals_demo_timeout_and_interrupt() -> None:
    manager = open_manager("signals-demo")
    await manager.start("s", {})
    step = await manager.navigate("s", "Test Timeout")
    request = step.render.input_request()
    assert request is not None and request.timeout == 5.0
    step = await manager.signal("s", "timeout")
    assert "# Timeout Occurred" in _contents(step)
    assert step.state.status is Status.TERMINATED

    await manager.start("s2", {})
    await manager.navigate("s2", "test interrupt")
    step = await manager.signal("s2", "interrupt")
    assert step.state.history[-1] == "signal_received"


async def test_reactivity_demo_loop_tool_and_global_interrupt() -> None:
    tools = StandInTools()
    manager = open_manager("reactivity-demo", tools)
    await manager.start("r", {})
    step = await manager.navigate("r", "")
    assert step.state.current_node_id == "menu"
    step = await manager.navigate("r", "1")
    assert tools.calls == [("increment", {"count": "0"})]
    assert step.state.current_node_id == "loop-result"
    assert "The counter is now at: **1**" in _contents(step)
    step = await manager.navigate("r", "")
    step = await manager.signal("r", "interrupt")  # on_signal_default of the entry node
    assert step.state.history[-2:] == ["catch-interrupt", "menu"]
    step = await manager.navigate("r", "2")
    assert "You requested weather for **San Francisco**." in _contents(step)
    step = await manager.navigate("r", "")
    step = await manager.navigate("r", "3")
    assert step.state.status is Status.TERMINATED


async def test_typed_flow_checks_the_schema() -> None:
    manager = open_manager("typed-flow")
    with pytest.raises(ContextTypeValidationError) as info:
        await manager.start("bad", {"api_key": 7, "retries": "3", "tags": ["a", 1]})
    assert {e.split(":")[0] for e in info.value.errors} == {
        'field "api_key"',
        'field "retries"',
        'field "tags"',
    }
    step = await manager.start("good", CONTEXTS["typed-flow"])
    assert "# Typed Flow Demo" in _contents(step)


async def test_fail_fast_names_the_missing_keys() -> None:
    with pytest.raises(ContextValidationError) as info:
        await open_manager("fail_fast").start("f", {"user_id": "u"})
    assert info.value.missing_keys == ["api_key"]


async def test_default_context_demo_with_an_override() -> None:
    manager = open_manager("default-context-demo")
    step = await manager.start("d", {"user_role": "admin"})
    text = _contents(step)
    assert "- **User Role**: admin" in text
    assert "- **Retries**: 3" in text
    assert "- **Debug Mode**: true" in text


async def test_subgraph_demo_jumps_into_the_folder_and_back() -> None:
    manager = open_manager("subgraph-demo")
    await manager.start("g", {})
    step = await manager.navigate("g", "Go to Checkout")
    assert step.state.current_node_id == "modules/checkout/start"
    step = await manager.navigate("g", "Back to Root")
    assert step.state.current_node_id == "start"


async def test_specs_inputs_and_mixed_formats() -> None:
    manager = open_manager("_tests/specs/inputs")
    await manager.start("i", {})
    step = await manager.navigate("i", "B")
    assert step.state.history == ["start", "end_b"]
    step = await open_manager("_tests/specs/mixed-formats").start("m", {})
    assert step.state.history == ["start", "choice", "end"]
    assert _contents(step) == "Start Verification.\nThis is a JSON node.Verification Complete.\n"


async def test_ui_exhaustive_fixture_renders_tool_results() -> None:
    tools = StandInTools()
    manager = open_manager("_tests/fixtures/ui_exhaustive", tools)
    step = await manager.start("u", {})
    assert step.state.current_node_id == "input_node"
    step = await manager.navigate("u", "Hello Tool")
    assert tools.calls == [("mock_tool", {"input": "Hello Tool"})]
    text = _contents(step)
    assert "user_input matches Hello Tool" in text
    assert "- tool_result ID: mock_tool" in text
    assert "- tool_result field: Hello Tool" in text
    assert step.state.status is Status.TERMINATED


@pytest.mark.in_process_only(reason="drives the Engine API (the host sets the locale), not sessions")
@pytest.mark.parametrize(
    ("locale", "heading"), [("", "# Welcome to Trellis"), ("pt", "# Bem-vindo ao Trellis")]
)
async def test_i18n_fixture_picks_messages_by_locale(locale: str, heading: str) -> None:
    engine = open_engine("_tests/fixtures/i18n_markdown")
    state = await engine.start("l")
    state.locale = locale  # hosts set the locale
    render = await engine.render(state)
    text = "".join(str(a.payload) for a in render.actions if a.type is ActionType.RENDER_CONTENT)
    assert text.startswith(heading)
    moved = await engine.navigate(state, "Ada")
    assert moved.context["name"] == "Ada"
    assert moved.history[-1] == "markdown_showcase"


async def test_process_demo_denial_takes_on_denied() -> None:
    manager = open_manager("process-demo")  # no dispatcher: the host answers the call
    step = await manager.start("p", {})
    assert step.state.status is Status.WAITING_FOR_TOOL
    call = step.render.tool_call()
    assert call is not None and call.name == "hello_script" and call.args == {"name": "TrellisUser"}
    step = await manager.navigate(
        "p", ToolResult(call.id, is_denied=True, error="User denied execution by policy")
    )
    assert step.state.history[-1] == "rejected"


async def test_polyglot_tools_and_tools_demo() -> None:
    tools = StandInTools()
    step = await open_manager("polyglot-tools", tools).start("p", {})
    assert tools.names() == ["greet_py", "greet_js", "greet_ps"]
    assert tools.calls[0][1]["config"] == {"debug": True, "retries": 3}
    text = _contents(step)
    assert "- **Python**: Hello, User!" in text and "- **PowerShell**: Good Day, User!" in text

    manager = open_manager("tools-demo", tools)
    await manager.start("t", {})
    step = await manager.navigate("t", "")
    assert "Result: echoed" in _contents(step)
