"""Conditions and context contracts (docs/engine.md, "Conditions", "Context")."""

from __future__ import annotations

import re
from typing import Any

import pytest

from trellis.conditions import CelCondition, InputEqualsCondition, compile_condition
from trellis.domain import Node, State
from trellis.errors import (
    ConditionError,
    ContextTypeValidationError,
    ContextValidationError,
    NodeDefinitionError,
)

from .helpers import make_engine

# --- conditions: the original's form ------------------------------------------------------------


@pytest.mark.in_process_only(reason="builds no engine: compiles a condition")
@pytest.mark.parametrize(
    ("expr", "value", "expected"),
    [
        ("input == 'yes'", "YES", True),  # case-insensitive
        ("input == 'yes'", "  yes\n", True),  # input trimmed
        ('input == "yes"', "yes", True),
        ("input == '2'", 2, True),  # Go %v printing of the input
        ("input == '2'", 2.0, True),
        ("input == 'true'", True, True),
        ("input == '<nil>'", None, True),
        ("input == 'map[a:1]'", {"a": 1}, True),
        ("foo input == 'x'", "x", True),  # plain words left of == are ignored
        ("Pick: input == 'X'", "x", True),  # not CEL: the original's meaning is kept
        ('foo-bar input == "x"', "y", False),
        ("input == 'yes'", "no", False),
        # escaped quote from an option text (docs/engine-differences.md, fix #6)
        ("input == 'don\\'t'", "don't", True),
        ("input == 'σ'", "ς", True),  # beyond ASCII: Greek sigma and its final form fold together
        ("input == 'été'", "ÉTÉ", True),
        ("input == 'ß'", "ẞ", True),
        ("input == 's'", "ſ", True),  # long s folds to s, though it lower-cases to itself
        ("input == 'ß'", "SS", False),  # simple folding: one letter never matches two
        ("input == 'Straße'", "STRASSE", False),
        ("input == 'sß'", "ßs", False),
    ],
)
def test_4_input_equals_form(expr: str, value: Any, expected: bool) -> None:
    condition = compile_condition(expr, where="t")
    assert isinstance(condition, InputEqualsCondition)
    assert condition.evaluate(value, {}, {}) is expected


@pytest.mark.in_process_only(reason="builds no engine: compiles a condition")
@pytest.mark.parametrize(
    ("expr", "value", "context", "expected"),
    [
        ("input != 'x'", "y", {}, True),  # docs/engine-differences.md, fix #6: meaningful, not always false
        ("input=='x'", "x", {}, True),
        ("context.age >= 18", None, {"age": 20}, True),
        ("age >= 18", None, {"age": 12}, False),  # top-level context keys are variables
        ("input.is_valid", {"is_valid": True}, {}, True),
        ("input == 'a' || input == 'b'", "b", {}, True),
        ("ok && input == 'x'", "x", {"ok": False}, False),  # a conjunction, not the old form
        ("sys.ans == 'hi'", None, {}, True),
        ("missing > 1", None, {}, False),  # runtime error → false
        ("context.nope == 1", None, {}, False),
        ("input", "not a bool", {}, False),  # non-bool → false
        ("1 / 0 == 1", None, {}, False),
    ],
)
def test_4_cel_conditions(expr: str, value: Any, context: dict[str, Any], expected: bool) -> None:
    condition = compile_condition(expr, where="t")
    assert isinstance(condition, CelCondition)
    assert condition.evaluate(value, context, {"ans": "hi"}) is expected


@pytest.mark.in_process_only(reason="builds no engine: compiles a condition")
def test_4_invalid_cel_raises_naming_where() -> None:
    with pytest.raises(ConditionError, match=r"flows/a\.md: transitions\[2\]\.condition: invalid condition"):
        compile_condition("input ===", where="flows/a.md: transitions[2].condition")


@pytest.mark.in_process_only(reason="builds no engine: compiles a condition")
def test_4_an_invalid_condition_reports_the_first_line_of_the_cel_error() -> None:
    # CEL reports several errors, each with a picture of the expression; the message keeps
    # the first line only, which names the first error and where it is.
    with pytest.raises(ConditionError) as caught:
        compile_condition("input ===", where="w")
    message = str(caught.value)
    assert message.startswith("w: invalid condition 'input ===': ")
    assert message.endswith("1:9: Syntax error: token recognition error at: '='")
    assert "\n" not in message


@pytest.mark.in_process_only(reason="builds no engine: compiles a condition")
def test_4_a_compiled_condition_shows_its_source() -> None:
    legacy = compile_condition("Pick input == ' Yes '", where="t")
    assert isinstance(legacy, InputEqualsCondition)
    assert legacy.source == "Pick input == ' Yes '"
    assert legacy.expected == " Yes "
    assert repr(legacy) == "InputEqualsCondition(\"Pick input == ' Yes '\")"
    cel_condition = compile_condition("age >= 18", where="t")
    assert cel_condition.source == "age >= 18"
    assert repr(cel_condition) == "CelCondition('age >= 18')"


async def test_4_invalid_condition_fails_loading_the_node() -> None:
    engine = make_engine(
        {"id": "start", "to": "bad"}, {"id": "bad", "transitions": [{"to": "x", "condition": "(("}]}
    )
    with pytest.raises(ConditionError, match="bad"):
        await engine.navigate(await engine.start("s"), "")


async def test_4_conditions_see_values_saved_by_this_input() -> None:
    engine = make_engine(
        {
            "id": "start",
            "save_to": "age",
            "transitions": [{"to": "adult", "condition": "age >= 18"}],
            "to": "minor",
        },
        {"id": "adult"},
        {"id": "minor"},
    )
    state = await engine.start("s")
    assert (await engine.navigate(state, 30)).current_node_id == "adult"
    assert (await engine.navigate(state, 3)).current_node_id == "minor"


# --- required_context -----------------------------------------------------------------------------


async def test_9_1_missing_keys_listed_in_declaration_order() -> None:
    engine = make_engine({"id": "start", "required_context": ["b", "a", "c"]})
    state = State.new("s", "start")
    state.context["a"] = None  # null counts as present
    with pytest.raises(ContextValidationError) as info:
        await engine.render(state)
    assert info.value.missing_keys == ["b", "c"]
    assert info.value.message == "Node 'start' requires context keys that are missing: [b c]"


async def test_9_1_system_context_satisfies_required_keys() -> None:
    engine = make_engine({"id": "start", "required_context": ["ans"]})
    state = State.new("s", "start")
    state.system_context["ans"] = "x"
    await engine.render(state)


# --- default_context: see test_start_render / test_navigate ------------------------------------------


async def test_9_2_defaults_not_reapplied_on_rerender() -> None:
    engine = make_engine({"id": "start", "default_context": {"a": 1}, "content": "{{ .a }}"})
    state = State.new("s", "start")
    assert (await engine.render(state)).actions[0].payload == "<no value>"


# --- context_schema -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "good", "bad"),
    [
        ("string", ["", "x"], [1, None, True]),
        ("int", [1, 2.0, -3], [True, 2.5, "1"]),
        ("float", [1, 2.5], [False, "1.0"]),
        ("bool", [True, False], [0, "true"]),
        ("[string]", [[], ["a"]], [["a", 1], "a"]),
        ("[[int]]", [[[1], []]], [[1]]),
    ],
)
async def test_9_3_schema_types(type_name: str, good: list[Any], bad: list[Any]) -> None:
    engine = make_engine(Node(id="start", context_schema={"v": type_name}))
    for value in good:
        state = State.new("s", "start")
        state.context["v"] = value
        await engine.render(state)
    for value in bad:
        state = State.new("s", "start")
        state.context["v"] = value
        with pytest.raises(ContextTypeValidationError):
            await engine.render(state)


async def test_9_3_all_failures_collected() -> None:
    engine = make_engine(
        {"id": "start", "context_schema": {"age": "int", "name": "string", "tags": ["string"]}}
    )
    state = State.new("s", "start")
    state.context.update({"age": "ten", "tags": ["a", 2]})
    with pytest.raises(ContextTypeValidationError) as info:
        await engine.render(state)
    err = info.value
    assert err.node_id == "start"
    assert err.message.startswith("Node 'start' has invalid context types: ")
    assert len(err.errors) == 3
    assert 'field "name": required' in err.errors
    assert any(e.startswith('field "age"') for e in err.errors)


@pytest.mark.parametrize(
    ("schema_type", "value", "named"),
    [
        ("[int]", None, "null"),
        ("[int]", True, "bool"),
        ("[int]", 7, "int"),
        ("[int]", 1.5, "float"),
        ("[int]", "x", "string"),
        ("[int]", {"a": 1}, "map"),
        ("string", [1], "list"),
    ],
)
async def test_9_3_a_wrong_type_is_reported_with_the_kind_of_value_found(
    schema_type: str, value: Any, named: str
) -> None:
    engine = make_engine(Node(id="start", context_schema={"v": schema_type}))
    state = State.new("s", "start")
    state.context["v"] = value
    with pytest.raises(ContextTypeValidationError) as info:
        await engine.render(state)
    assert info.value.errors == [f'field "v": expected {schema_type}, got {named}']


@pytest.mark.in_process_only(reason="a Python set cannot cross the wire")
async def test_9_3_a_value_json_has_no_name_for_is_reported_by_its_python_type() -> None:
    engine = make_engine(Node(id="start", context_schema={"v": "[int]"}))
    state = State.new("s", "start")
    state.context["v"] = {1}
    with pytest.raises(ContextTypeValidationError) as info:
        await engine.render(state)
    assert info.value.errors == ['field "v": expected [int], got set']


@pytest.mark.parametrize("half_list", ["[string", "string]"])
async def test_9_3_a_list_type_needs_both_brackets(half_list: str) -> None:
    engine = make_engine(Node(id="start", context_schema={"v": half_list}, source="flows/start.md"))
    with pytest.raises(NodeDefinitionError, match=rf"unsupported type '{re.escape(half_list)}'"):
        await engine.render(State.new("s", "start"))


async def test_9_3_schema_reads_system_context_when_key_not_in_context() -> None:
    engine = make_engine(Node(id="start", context_schema={"ans": "string"}))
    state = State.new("s", "start")
    state.system_context["ans"] = "x"
    await engine.render(state)


async def test_9_3_schema_checked_only_after_required_passes() -> None:
    engine = make_engine(Node(id="start", required_context=("a",), context_schema={"b": "int"}))
    with pytest.raises(ContextValidationError):
        await engine.render(State.new("s", "start"))


async def test_9_3_unsupported_type_fails_when_node_is_compiled() -> None:
    engine = make_engine(Node(id="start", context_schema={"when": "date"}, source="flows/start.md"))
    with pytest.raises(NodeDefinitionError, match=r"flows/start\.md.*context_schema\.when.*unsupported type"):
        await engine.render(State.new("s", "start"))
