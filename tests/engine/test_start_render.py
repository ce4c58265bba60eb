"""Start, Render, interpolation, idempotency, timeouts (docs/engine.md: "Transitions", "Rendering",
"Templates", "Tools and sagas", "Signals and timeouts")."""

from __future__ import annotations

import pytest

from trellis.domain import ActionType, InputRequest, Node, State, Status, ToolCall
from trellis.engine.idempotency import idempotency_key
from trellis.errors import (
    ContextValidationError,
    ExecutionViolation,
    NodeLoadError,
    NodeNotFound,
    TemplateError,
    TrellisError,
)

from .helpers import Recorder, make_engine

# --- Start -------------------------------------------------------------------------------


async def test_3_2_1_start_gives_fresh_state_at_entry() -> None:
    engine = make_engine({"id": "start", "content": "hi"})
    state = await engine.start("s1")
    assert state.session_id == "s1"
    assert state.current_node_id == "start"
    assert state.status is Status.ACTIVE
    assert state.history == ["start"]
    assert state.pending_tool_call == ""
    assert state.system_context == {}
    assert state.locale == ""


async def test_3_2_1_entry_node_option_is_used() -> None:
    engine = make_engine({"id": "main", "content": "hi"}, entry_node="main")
    state = await engine.start("s1")
    assert state.current_node_id == "main"
    assert state.history == ["main"]


async def test_3_2_2_start_succeeds_when_entry_cannot_be_loaded() -> None:
    hooks = Recorder()
    engine = make_engine({"id": "other"}, hooks=[hooks])
    state = await engine.start("s1", {"a": 1})
    assert state.current_node_id == "start"
    assert state.context == {"a": 1}
    assert hooks.events == []
    with pytest.raises(NodeNotFound, match="failed to load node start"):
        await engine.render(state)


async def test_3_2_3_and_4_defaults_copied_then_initial_context_overrides() -> None:
    engine = make_engine({"id": "start", "default_context": {"a": 1, "b": 2}})
    state = await engine.start("s1", {"b": 20, "c": 30})
    assert state.context == {"a": 1, "b": 20, "c": 30}


async def test_3_2_5_entry_with_do_waits_for_its_tool() -> None:
    engine = make_engine({"id": "start", "do": {"name": "init_db"}, "to": "end"}, {"id": "end"})
    state = await engine.start("s1")
    assert state.status is Status.WAITING_FOR_TOOL
    assert state.pending_tool_call == "init_db"


async def test_3_2_6_start_emits_node_enter_and_one_tool_call() -> None:
    hooks = Recorder()
    engine = make_engine(
        {"id": "start", "do": {"name": "init", "args": {"who": "{{ .user }}"}}, "to": "end"},
        {"id": "end"},
        hooks=[hooks],
    )
    state = await engine.start("s1", {"user": "ann"})
    assert hooks.seen() == [("node_enter", "start"), ("tool_call", "init")]
    assert hooks.events[1].data == {"who": "ann"}
    await engine.render(state)
    await engine.render(state)
    assert len(hooks.events) == 2  # docs/engine-differences.md, fix #9: render does not repeat tool_call


async def test_3_2_start_performs_no_validation() -> None:
    engine = make_engine({"id": "start", "required_context": ["token"], "do": {"name": "x"}, "wait": True})
    state = await engine.start("s1")
    assert state.current_node_id == "start"
    with pytest.raises(ExecutionViolation):
        await engine.render(state)


# --- Render (Rendering) -------------------------------------------------------------------


async def test_3_3_1_render_without_state_is_an_error() -> None:
    engine = make_engine({"id": "start"})
    with pytest.raises(Exception, match="state"):
        await engine.render(None)  # type: ignore[arg-type]


async def test_3_3_2_render_of_missing_node_names_it() -> None:
    engine = make_engine({"id": "start"})
    with pytest.raises(NodeLoadError, match="failed to load node ghost") as info:
        await engine.render(State.new("s", "ghost"))
    assert info.value.node_id == "ghost"


@pytest.mark.parametrize(
    "listening",
    [{"wait": True}, {"input_type": "text"}, {"type": "question"}, {"options": [{"text": "a", "to": "x"}]}],
)
async def test_3_3_3_do_with_input_is_an_execution_violation(listening: dict[str, object]) -> None:
    engine = make_engine({"id": "start", "do": {"name": "t"}, **listening}, {"id": "x"})
    with pytest.raises(ExecutionViolation, match="cannot have both 'do' \\(tool\\) and 'wait/input'"):
        await engine.render(State.new("s", "start"))


async def test_3_3_4_render_checks_required_context() -> None:
    engine = make_engine({"id": "start", "required_context": ["name"], "content": "hi"})
    with pytest.raises(ContextValidationError):
        await engine.render(State.new("s", "start"))


async def test_3_3_5_untyped_file_node_renders_empty_content() -> None:
    engine = make_engine({"id": "start"})
    result = await engine.render(State.new("s", "start"))
    assert [(a.type, a.payload) for a in result.actions] == [(ActionType.RENDER_CONTENT, "")]


async def test_3_3_5_tool_node_with_empty_body_renders_no_content() -> None:
    engine = make_engine({"id": "start", "type": "tool", "do": {"name": "t"}})
    result = await engine.render(State.new("s", "start"))
    assert [a.type for a in result.actions] == [ActionType.CALL_TOOL]


async def test_3_3_5_unknown_type_with_body_renders_it() -> None:
    engine = make_engine({"id": "start", "type": "sink", "content": "bye"})
    result = await engine.render(State.new("s", "start"))
    assert result.actions[0].payload == "bye"


@pytest.mark.in_process_only(reason="a content converter is an in-process object; a server takes none")
async def test_3_3_5_content_converter_post_processes_content() -> None:
    class Upper:
        def convert(self, content: str) -> str:
            return content.upper()

    engine = make_engine({"id": "start", "content": "hi {{ .n }}"}, content_converter=Upper())
    state = State.new("s", "start")
    state.context["n"] = "bo"
    result = await engine.render(state)
    assert result.actions[0].payload == "HI BO"


@pytest.mark.in_process_only(reason="a content converter is an in-process object; a server takes none")
async def test_3_3_5_a_failing_content_converter_is_an_error_naming_the_node() -> None:
    class Broken:
        def convert(self, content: str) -> str:
            raise ValueError("no markdown today")

    engine = make_engine({"id": "start", "content": "hi"}, content_converter=Broken())
    with pytest.raises(TrellisError, match="content conversion failed in node 'start': no markdown today"):
        await engine.render(State.new("s", "start"))


async def test_3_3_6_input_request_defaults_and_timeout() -> None:
    engine = make_engine(
        {"id": "start", "wait": True, "timeout": "1m30s", "on_timeout": "late"},
        {"id": "q", "type": "question"},
        {"id": "c", "input_type": "confirm", "input_default": "no"},
        {"id": "late"},
    )
    req = (await engine.render(State.new("s", "start"))).input_request()
    assert req == InputRequest(type="text", options=(), default="", timeout=90.0)
    req = (await engine.render(State.new("s", "q"))).input_request()
    assert req is not None and req.type == "text" and req.timeout == 0
    req = (await engine.render(State.new("s", "c"))).input_request()
    assert req == InputRequest(type="confirm", options=("yes", "no"), default="no", timeout=0.0)


async def test_3_3_6_invalid_timeout_gives_zero() -> None:
    node = Node(id="start", wait=True, timeout="soon")
    engine = make_engine(node)
    req = (await engine.render(State.new("s", "start"))).input_request()
    assert req is not None and req.timeout == 0


async def test_3_3_6_input_type_passed_through_verbatim() -> None:
    engine = make_engine({"id": "start", "input_type": "int"})
    req = (await engine.render(State.new("s", "start"))).input_request()
    assert req is not None and req.type == "int"


async def test_3_3_7_call_tool_payload_metadata_key_and_args() -> None:
    engine = make_engine(
        {
            "id": "start",
            "do": {
                "id": "c1",
                "name": "charge",
                "args": {"amount": "{{ .total }}", "fixed": 3, "nested": {"x": "{{ .total }}"}},
                "metadata": {"owner": "call", "keep": "yes"},
            },
            "metadata": {"owner": "node"},
        }
    )
    state = State.new("sess", "start")
    state.context["total"] = 3
    call = (await engine.render(state)).tool_call()
    assert call is not None
    key = idempotency_key("sess", "start", 1, "charge")
    assert call.id == "c1"
    assert call.name == "charge"
    assert call.args == {"amount": "3", "fixed": 3, "nested": {"x": "{{ .total }}"}}
    assert call.metadata == {"owner": "node", "keep": "yes", "idempotency_key": key}
    assert call.idempotency_key == key


async def test_3_3_7_rolling_back_emits_undo_not_do() -> None:
    engine = make_engine(
        {"id": "start", "do": {"name": "book"}, "undo": {"name": "cancel", "args": {"a": 1}}}
    )
    state = State.new("s", "start")
    state.status = Status.ROLLING_BACK
    call = (await engine.render(state)).tool_call()
    assert call is not None and call.name == "cancel" and call.args == {"a": 1}


async def test_3_3_7_tool_type_without_do_is_a_violation_except_in_rollback() -> None:
    engine = make_engine({"id": "start", "type": "tool"})
    with pytest.raises(ExecutionViolation, match="is type 'tool' but missing tool_call definition"):
        await engine.render(State.new("s", "start"))
    state = State.new("s", "start")
    state.status = Status.ROLLING_BACK
    assert (await engine.render(state)).actions == ()


async def test_3_3_8_terminal_flag() -> None:
    engine = make_engine(
        {"id": "plain"},
        {"id": "onerr", "type": "tool", "do": {"name": "t"}, "on_error": "x", "on_denied": "x"},
        {"id": "edge", "to": "plain"},
        {"id": "sig", "on_interrupt": "plain"},
        {"id": "tmo", "timeout": "5s"},
    )
    assert (await engine.render(State.new("s", "plain"))).terminal
    assert (await engine.render(State.new("s", "onerr"))).terminal
    assert not (await engine.render(State.new("s", "edge"))).terminal
    assert not (await engine.render(State.new("s", "sig"))).terminal
    assert not (await engine.render(State.new("s", "tmo"))).terminal


async def test_3_3_action_order_and_render_is_pure() -> None:
    engine = make_engine({"id": "start", "content": "Hi {{ .name }}", "input_type": "text", "to": "end"})
    state = State.new("s", "start")
    state.context["name"] = "Ann"
    before = state.to_json()
    result = await engine.render(state)
    assert [a.type for a in result.actions] == [ActionType.RENDER_CONTENT, ActionType.REQUEST_INPUT]
    assert result.actions[0].payload == "Hi Ann"
    assert state.to_json() == before


async def test_3_3_rendering_a_terminated_state_works() -> None:
    engine = make_engine({"id": "start", "content": "done"})
    state = State.new("s", "start")
    state.status = Status.TERMINATED
    state.terminated = True
    assert (await engine.render(state)).actions[0].payload == "done"


# --- interpolation (Templates) ------------------------------------------------------------


async def test_5_1_templates_see_context_and_sys() -> None:
    engine = make_engine({"id": "start", "content": "{{ .name }} said {{ .sys.ans }}; {{ .missing }}"})
    state = State.new("s", "start")
    state.context.update({"name": "Ann", "sys": "shadowed"})
    state.system_context["ans"] = "yes"
    assert (await engine.render(state)).actions[0].payload == "Ann said yes; <no value>"


@pytest.mark.in_process_only(reason="the server has no setting for the HTML-escaping template variant")
async def test_5_1_html_option_escapes() -> None:
    engine = make_engine({"id": "start", "content": "{{ .x }}"}, html=True)
    state = State.new("s", "start")
    state.context["x"] = "<b>&"
    assert (await engine.render(state)).actions[0].payload == "&lt;b&gt;&amp;"


async def test_5_1_template_parse_error_surfaces_at_render_not_navigate() -> None:
    engine = make_engine({"id": "start", "to": "bad"}, {"id": "bad", "content": "{{ if }"})
    state = await engine.start("s")
    moved = await engine.navigate(state, "")
    assert moved.current_node_id == "bad"
    with pytest.raises(TemplateError, match="rendering failed during interpolation"):
        await engine.render(moved)


async def test_5_4_tool_arg_interpolation_error_names_the_arg() -> None:
    engine = make_engine({"id": "start", "type": "tool", "do": {"name": "t", "args": {"who": "{{ .a.b }}"}}})
    state = State.new("s", "start")
    state.context["a"] = "text"
    with pytest.raises(TemplateError, match="failed to interpolate tool arg 'who'"):
        await engine.render(state)


async def test_5_4_undo_args_use_context_at_rollback_time() -> None:
    engine = make_engine({"id": "start", "undo": {"name": "u", "args": {"v": "{{ .v }}"}}})
    state = State.new("s", "start")
    state.status = Status.ROLLING_BACK
    state.context["v"] = "late"
    call = (await engine.render(state)).tool_call()
    assert call is not None and call.args == {"v": "late"}


def _format_node(**extra: object) -> dict[str, object]:
    return {
        "id": "start",
        "type": "format",
        "messages": {
            "en": [{"text": "Hello {{ .name }}"}, {"text": "!", "condition": "vip"}],
            "pt": [{"text": "Olá"}],
            "": [{"text": "neutral"}],
        },
        **extra,
    }


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("pt", "Olá"), ("", "neutral"), ("pt-BR", "neutral"), ("en", "Hello Ann")],
)
async def test_5_6_format_locale_fallback(locale: str, expected: str) -> None:
    engine = make_engine(_format_node())
    state = State.new("s", "start")
    state.locale = locale
    state.context["name"] = "Ann"
    assert (await engine.render(state)).actions[0].payload == expected


async def test_5_6_format_en_fallback_when_no_neutral_messages() -> None:
    engine = make_engine({"id": "start", "type": "format", "messages": {"en": [{"text": "E"}]}})
    state = State.new("s", "start")
    state.locale = "fr"
    assert (await engine.render(state)).actions[0].payload == "E"


async def test_5_6_format_conditions_see_context_fix_17_5() -> None:
    engine = make_engine(_format_node())
    state = State.new("s", "start")
    state.locale = "en"
    state.context.update({"name": "Ann", "vip": True})
    assert (await engine.render(state)).actions[0].payload == "Hello Ann!"


async def test_5_6_format_body_used_when_no_messages_match() -> None:
    engine = make_engine(
        {"id": "start", "type": "format", "content": "body", "messages": {"de": [{"text": "x"}]}}
    )
    state = State.new("s", "start")
    state.locale = "fr"
    assert (await engine.render(state)).actions[0].payload == "body"


async def test_5_6_empty_format_node_without_messages_renders_nothing() -> None:
    engine = make_engine({"id": "start", "type": "format"})
    assert (await engine.render(State.new("s", "start"))).actions == ()


# --- idempotency (Tools and sagas) --------------------------------------------------------


@pytest.mark.in_process_only(reason="builds no engine: a plain key function")
def test_6_idempotency_key_matches_spec_example() -> None:
    assert (
        idempotency_key("sess-idem", "start", 1, "charge_card")
        == "3cd43ec3c22bf7d22ced056f28115fd6937c875d06f5f214e213f0e4b966065c"
    )


async def test_6_key_is_stable_and_depends_on_session_and_history() -> None:
    engine = make_engine({"id": "start", "type": "tool", "do": {"name": "charge_card"}})
    state = await engine.start("sess-idem")
    first = (await engine.render(state)).tool_call()
    again = (await engine.render(state)).tool_call()
    assert first is not None and again is not None
    assert (
        first.idempotency_key
        == again.idempotency_key
        == idempotency_key("sess-idem", "start", 1, "charge_card")
    )
    other = State.new("other", "start")
    longer = State.new("sess-idem", "start")
    longer.history.append("start")
    keys = {(await engine.render(s)).tool_call().idempotency_key for s in (other, longer)}  # type: ignore[union-attr]
    assert first.idempotency_key not in keys and len(keys) == 2


# --- timeouts (Signals and timeouts) ---------------------------------------------------------


async def test_8_node_with_timeout_but_no_input_has_no_request() -> None:
    engine = make_engine({"id": "start", "timeout": "5s", "on_timeout": "x"}, {"id": "x"})
    result = await engine.render(State.new("s", "start"))
    assert result.input_request() is None
    assert not result.terminal


async def test_programmatic_do_without_id_is_emitted_under_its_name() -> None:
    node = Node(id="start", type="tool", do=ToolCall(id="", name="ping"))
    engine = make_engine(node)
    state = await engine.start("s")
    assert state.pending_tool_call == "ping"
    call = (await engine.render(state)).tool_call()
    assert call is not None and call.id == "ping"


async def test_3_3_7_emitted_args_are_a_private_copy() -> None:
    engine = make_engine(
        {"id": "start", "type": "tool", "do": {"name": "t", "args": {"opts": {"retries": 1}, "ids": [1]}}}
    )
    state = State.new("s", "start")
    call = (await engine.render(state)).tool_call()
    assert call is not None and call.args is not None
    call.args["opts"]["retries"] = 5
    call.args["ids"].append(2)
    again = (await engine.render(state)).tool_call()
    assert again is not None and again.args == {"opts": {"retries": 1}, "ids": [1]}


async def test_5_3_missing_and_null_keys_print_no_value() -> None:
    engine = make_engine({"id": "start", "content": "[{{ .gone }}|{{ .nil }}|{{ .nil.deeper }}]"})
    state = State.new("s", "start")
    state.context["nil"] = None
    assert (await engine.render(state)).actions[0].payload == "[<no value>|<no value>|<no value>]"


async def test_5_5_numbers_print_like_go() -> None:
    engine = make_engine({"id": "start", "content": "{{ .a }} {{ .b }} {{ .c }} {{ .d }}"})
    state = State.new("s", "start")
    state.context.update({"a": 2.0, "b": 2.5, "c": 3, "d": True})
    assert (await engine.render(state)).actions[0].payload == "2 2.5 3 true"


async def test_3_10_error_kinds_carry_machine_readable_reasons() -> None:
    engine = make_engine({"id": "start", "do": {"name": "t"}, "wait": True})
    with pytest.raises(ExecutionViolation) as info:
        await engine.render(State.new("s", "start"))
    assert info.value.reason == "EXECUTION_VIOLATION" and info.value.node_id == "start"
    with pytest.raises(NodeNotFound) as missing:
        await engine.render(State.new("s", "nowhere"))
    assert missing.value.reason == "NODE_NOT_FOUND"


async def test_5_6_invalid_message_condition_fails_compiling_the_node() -> None:
    from trellis.errors import ConditionError

    engine = make_engine(
        {"id": "start", "type": "format", "messages": {"en": [{"text": "x", "condition": "(("}]}}
    )
    with pytest.raises(ConditionError, match=r"messages\['en'\]\[0\]\.condition"):
        await engine.render(State.new("s", "start"))
