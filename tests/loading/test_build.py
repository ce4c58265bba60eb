"""File form → canonical node (docs/engine.md, "Node fields"): the sugar in order, strict typing,
tool lists, metadata flattening."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from trellis.domain import FormatItem, Tool, ToolCall, Transition
from trellis.errors import NodeDefinitionError
from trellis.loading import NodeDraft, ToolImport, build_draft, build_node
from trellis.loading.tools import importers_of


def build(data: dict[str, Any], content: str | None = None, node_id: str = "x") -> Any:
    return build_node(node_id, data, content, source="flows/x.md")


def fails(data: dict[str, Any], field: str) -> str:
    """Build ``data`` expecting a definition error on ``field``; returns the message."""
    with pytest.raises(NodeDefinitionError) as caught:
        build(data)
    assert caught.value.field == field
    assert caught.value.source == "flows/x.md"
    message = str(caught.value)
    assert message.startswith(f"flows/x.md: field '{field}': ")
    return message


# --- 1. id -----------------------------------------------------------------------------------------


def test_id_defaults_to_the_given_path_id() -> None:
    assert build({}, node_id="modules/checkout/start").id == "modules/checkout/start"


def test_explicit_id_overrides_and_loses_a_node_extension() -> None:
    assert build({"id": "choice.json"}).id == "choice"
    assert build({"id": "other"}).id == "other"


def test_explicit_id_keeps_a_dot_that_is_not_a_node_extension() -> None:
    assert build({"id": "step.2"}).id == "step.2"


def test_id_must_be_a_string() -> None:
    assert "expected a string, got number 5" in fails({"id": 5}, "id")


# --- 2. type ---------------------------------------------------------------------------------------


def test_type_defaults_to_text_and_other_values_are_kept() -> None:
    assert build({}).type == "text"
    assert build({"type": ""}).type == "text"
    assert build({"type": "sink"}).type == "sink"


# --- 3/4. wait, on_error, on_denied, on_signal and the signal sugar --------------------------------


def test_plain_fields_are_copied() -> None:
    node = build({"wait": True, "on_error": "oops", "on_denied": "no", "save_to": "answer"})
    assert (node.wait, node.on_error, node.on_denied, node.save_to) == (True, "oops", "no", "answer")


def test_signal_sugar_overrides_explicit_entries_and_keeps_the_others() -> None:
    node = build(
        {
            "on_signal": {"timeout": "explicit", "interrupt": "explicit", "custom": "c"},
            "on_timeout": "late",
            "on_interrupt": "stop",
        }
    )
    assert node.on_signal == {"timeout": "late", "interrupt": "stop", "custom": "c"}


def test_on_signal_default_is_copied() -> None:
    assert build({"on_signal_default": {"quit": "finish"}}).on_signal_default == {"quit": "finish"}


# --- 5/6. context contracts ------------------------------------------------------------------------


def test_required_and_default_context_are_copied() -> None:
    node = build(
        {"required_context": ["a", "b"], "default_context": {"n": 3, "tags": ["x"], "deep": {"k": None}}}
    )
    assert node.required_context == ("a", "b")
    assert node.default_context == {"n": 3, "tags": ["x"], "deep": {"k": None}}


def test_default_context_is_not_shared_with_the_definition() -> None:
    data: dict[str, Any] = {"default_context": {"tags": ["x"]}}
    node = build(data)
    data["default_context"]["tags"].append("y")
    assert node.default_context == {"tags": ["x"]}


def test_context_schema_lists_become_bracketed_type_strings() -> None:
    node = build(
        {
            "context_schema": {
                "name": "string",
                "n": "int",
                "tags": ["string"],
                "grid": [["float"]],
                "ok": "[bool]",
            }
        }
    )
    assert node.context_schema == {
        "name": "string",
        "n": "int",
        "tags": "[string]",
        "grid": "[[float]]",
        "ok": "[bool]",
    }


def test_context_schema_list_must_have_one_element() -> None:
    message = fails({"context_schema": {"tags": ["string", "int"]}}, "context_schema.tags")
    assert "expected single element list, got 2 elements" in message


@pytest.mark.parametrize("bad", ["date", "[date]", "String", ""])
def test_context_schema_unknown_type_is_rejected_at_load(bad: str) -> None:
    message = fails({"context_schema": {"when": bad}}, "context_schema.when")
    assert f"unsupported type '{bad}'" in message


def test_context_schema_value_of_another_kind_is_rejected() -> None:
    assert "got number 3" in fails({"context_schema": {"n": 3}}, "context_schema.n")


# --- 7. transitions --------------------------------------------------------------------------------


def test_transitions_come_from_options_then_transitions_then_to() -> None:
    node = build(
        {
            "to": "last",
            "transitions": [{"to": "middle", "condition": "input == 'm'"}],
            "options": [{"text": "First", "to": "first"}],
        }
    )
    assert node.transitions == (
        Transition("first", "input == 'First'"),
        Transition("middle", "input == 'm'"),
        Transition("last", ""),
    )


def test_target_aliases_first_non_empty_wins_in_order() -> None:
    node = build(
        {
            "transitions": [
                {"to_node_id": "b", "jump_to": "c"},
                {"jump_to": "c"},
                {"to": "a", "to_node_id": "b"},
                {"to": "", "to_node_id": "b"},
            ]
        }
    )
    assert [t.to_node_id for t in node.transitions] == ["b", "c", "a", "b"]


def test_from_fields_are_accepted_and_ignored() -> None:
    node = build({"transitions": [{"from": "x", "from_node_id": "x", "to": "y"}]})
    assert node.transitions == (Transition("y", ""),)


def test_option_condition_wins_over_text() -> None:
    node = build({"options": [{"text": "Yes", "condition": "input == 'y'", "to": "a"}]})
    assert node.transitions == (Transition("a", "input == 'y'"),)


def test_option_text_quotes_are_backslash_escaped() -> None:
    node = build({"options": [{"text": "It's", "to": "a"}]})
    assert node.transitions[0].condition == "input == 'It\\'s'"


def test_transition_without_target_is_rejected() -> None:
    assert "has no target" in fails({"options": [{"text": "Go"}]}, "options[0]")


def test_transition_entry_must_be_a_mapping() -> None:
    assert "expected a mapping, got string" in fails({"transitions": ["end"]}, "transitions[0]")


def test_relative_ids_are_not_resolved() -> None:
    node = build({"to": "end"}, node_id="modules/checkout/start")
    assert node.transitions == (Transition("end", ""),)


# --- 8. content ------------------------------------------------------------------------------------


def test_body_is_the_content_and_a_content_key_is_used_without_a_body() -> None:
    assert build({}, content="Body\n").content == "Body\n"
    assert build({"content": "From key"}).content == "From key"
    assert build({}).content == ""


def test_content_key_must_be_a_string() -> None:
    fails({"content": ["a"]}, "content")


# --- 9. messages -----------------------------------------------------------------------------------


def test_messages_are_copied_per_locale() -> None:
    node = build(
        {"messages": {"en": [{"text": "Hi"}, {"text": "New", "condition": "input == 'new'"}], "pt": []}}
    )
    assert node.messages == {"en": (FormatItem("Hi"), FormatItem("New", "input == 'new'")), "pt": ()}


def test_message_text_must_be_a_string() -> None:
    fails({"messages": {"en": [{"text": 3}]}}, "messages.en[0].text")


# --- 10. input configuration -----------------------------------------------------------------------


def test_options_infer_choice_and_input_options() -> None:
    node = build(
        {
            "options": [
                {"text": "A", "to": "a"},
                {"condition": "input == 'z'", "to": "z"},
                {"text": "B", "to": "b"},
            ]
        }
    )
    assert node.input_type == "choice"
    assert node.input_options == ("A", "B")


def test_explicit_input_type_and_options_win_over_inferred_ones() -> None:
    node = build({"input_type": "text", "input_options": ["x"], "options": [{"text": "A", "to": "a"}]})
    assert (node.input_type, node.input_options) == ("text", ("x",))


def test_confirm_without_options_gets_yes_and_no() -> None:
    node = build({"input_type": "confirm", "input_default": "no"})
    assert (node.input_type, node.input_options, node.input_default) == ("confirm", ("yes", "no"), "no")


def test_other_input_types_pass_through_verbatim() -> None:
    assert build({"input_type": "int"}).input_type == "int"


def test_input_default_is_kept_without_an_input_type() -> None:
    # docs/engine-differences.md, fix #17: the original dropped it; we keep it.
    node = build({"wait": True, "input_default": "Bob"})
    assert (node.input_type, node.input_default) == ("", "Bob")


def test_input_options_without_any_input_type_are_dropped() -> None:
    assert build({"wait": True, "input_options": ["a"]}).input_options == ()


# --- 11. tool configuration ------------------------------------------------------------------------


def test_do_and_undo_ids_default_to_the_name() -> None:
    node = build({"do": {"name": "book", "args": {"n": 1}}, "undo": {"name": "cancel", "id": "c1"}})
    assert node.do == ToolCall(id="book", name="book", args={"n": 1})
    assert node.undo == ToolCall(id="c1", name="cancel")


def test_tool_call_is_the_legacy_alias_used_only_without_do() -> None:
    assert build({"tool_call": {"name": "old"}}).do == ToolCall(id="old", name="old")
    assert build({"tool_call": {"name": "old"}, "do": {"name": "new"}}).do == ToolCall(id="new", name="new")


def test_tool_call_metadata_is_flattened() -> None:
    node = build(
        {"do": {"name": "get_os", "metadata": {"x-exec": {"command": "go", "args": ["env", "GOOS"]}}}}
    )
    assert node.do is not None
    assert node.do.metadata == {"x-exec-command": "go", "x-exec-args": "env GOOS"}


def test_do_written_as_a_string_is_rejected() -> None:
    message = fails({"do": "init_db"}, "do")
    assert 'got string "init_db"' in message


def test_do_without_name_is_rejected() -> None:
    assert "is required" in fails({"do": {"args": {}}}, "do.name")


def test_inline_tools_keep_order_and_later_duplicates_replace_in_place() -> None:
    node = build(
        {
            "tools": [
                {"name": "a", "description": "first", "parameters": {"type": "object"}},
                {"name": "b", "command": "ignored by the loader"},
                {"name": "a", "description": "second"},
            ]
        }
    )
    assert node.tools == (Tool("a", "second"), Tool("b"))


def test_inline_tool_without_name_is_rejected() -> None:
    assert "inline tool missing name" in fails({"tools": [{"description": "x"}]}, "tools[0]")


def test_tool_item_of_another_kind_is_rejected() -> None:
    assert "got number 3" in fails({"tools": [3]}, "tools[0]")


def test_string_tool_items_are_imports_with_the_extension_stripped() -> None:
    draft = build_draft("x", {"tools": ["lib/tools.yaml", {"name": "own"}]}, None, source="s")
    assert isinstance(draft, NodeDraft)
    assert draft.tool_items == (ToolImport("lib/tools"), Tool("own"))
    assert draft.imports == ("lib/tools",)
    # Loaders cache drafts and share them between lookups: nobody may change one.
    with pytest.raises(dataclasses.FrozenInstanceError):
        draft.tool_items = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        draft.tool_items[0].node_id = "other"  # type: ignore[misc]


def test_build_node_cannot_resolve_imports_without_a_lookup() -> None:
    assert "needs a loader" in fails({"tools": ["lib"]}, "tools")


def test_build_node_resolves_imports_through_a_lookup() -> None:
    library = build_draft("lib", {"tools": [{"name": "t"}]}, None, source="lib.yaml")
    node = build_node("x", {"tools": ["lib"]}, None, source="x.md", lookup={"lib": library}.get)
    assert node.tools == (Tool("t"),)


# --- 12. metadata and timeout ----------------------------------------------------------------------


def test_metadata_is_flattened_with_go_printing() -> None:
    node = build(
        {
            "metadata": {
                "x-exec": {"command": "uname", "args": ["-s", "-r"]},
                "team": {"owner": "ops", "size": 3},
                "flag": True,
                "ratio": 2.0,
                "none": None,
            }
        }
    )
    assert node.metadata == {
        "x-exec-command": "uname",
        "x-exec-args": "-s -r",
        "team-owner": "ops",
        "team-size": "3",
        "flag": "true",
        "ratio": "2",
        "none": "<nil>",
    }


def test_timeout_is_kept_as_written() -> None:
    assert build({"timeout": "1m30s"}).timeout == "1m30s"


def test_timeout_that_is_not_a_duration_is_rejected() -> None:
    assert "expected a duration" in fails({"timeout": "soon"}, "timeout")


# --- strict typing ---------------------------------------------------------------------------------


def test_wrong_type_message_names_file_field_and_value() -> None:
    assert (
        fails({"wait": "true"}, "wait") == "flows/x.md: field 'wait': expected a boolean, got string \"true\""
    )


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({"options": [{"text": 1, "to": "a"}]}, "options[0].text", "expected a string, got number 1"),
        ({"input_options": ["a", 2]}, "input_options[1]", "got number 2"),
        ({"timeout": 30}, "timeout", "expected a string, got number 30"),
        ({"required_context": "api_key"}, "required_context", "expected a list"),
        ({"default_context": ["a"]}, "default_context", "expected a mapping, got list"),
        ({"on_signal": {"timeout": 5}}, "on_signal.timeout", "got number 5"),
        ({"to": ["a"]}, "to", "expected a string, got list"),
        ({"type": True}, "type", "got boolean true"),
        ({"do": {"name": "t", "args": "x=1"}}, "do.args", "expected a mapping"),
        ({"save_to": 1.5}, "save_to", "got number 1.5"),
        ({"metadata": "text"}, "metadata", "expected a mapping"),
        ({"messages": {"en": "hi"}}, "messages.en", "expected a list"),
        ({"on_signal": {1: "x"}}, "on_signal", "keys must be strings"),
    ],
)
def test_wrongly_typed_fields_are_rejected(data: dict[str, Any], field: str, fragment: str) -> None:
    assert fragment in fails(data, field)


def test_null_fields_count_as_absent() -> None:
    node = build({"wait": None, "type": None, "to": None, "options": None, "do": None, "metadata": None})
    assert (node.wait, node.type, node.transitions, node.do, node.metadata) == (False, "text", (), None, {})


def test_unknown_fields_are_ignored() -> None:
    assert build({"next": "x", "input_secret": True, "format": "md"}).transitions == ()


def test_non_json_values_are_rejected() -> None:
    assert "unsupported value of type bytes" in fails({"default_context": {"b": b"x"}}, "default_context.b")


@pytest.mark.parametrize(
    ("value", "described"),
    [
        ("x" * 40, 'string "' + "x" * 40 + '"'),
        ("y" * 41, 'string "' + "y" * 37 + '..."'),  # long strings are cut
        (3, "number 3"),
        (2.5, "number 2.5"),
        ([1], "list"),
        ({"a": 1}, "mapping"),
        ({1, 2}, "set"),  # only a program can pass one; files hold JSON-like values
    ],
)
def test_a_wrong_value_is_described_briefly(value: object, described: str) -> None:
    assert fails({"wait": value}, "wait").endswith(f"expected a boolean, got {described}")


def nested_list(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_values_may_nest_64_levels_deep_and_no_deeper() -> None:
    build({"default_context": {"v": nested_list(64)}})
    field = "default_context.v" + "[0]" * 65
    assert fails({"default_context": {"v": nested_list(65)}}, field).endswith(
        "values nested more than 64 levels deep"
    )


def test_one_definition_holds_at_most_100000_values() -> None:
    build({"default_context": {"v": list(range(99_999))}})  # the list and its items: 100000
    message = fails({"default_context": {"v": list(range(100_000))}}, "default_context.v[99999]")
    assert message.endswith(
        "too many values (more than 100000; YAML aliases expand each time they are used)"
    )


def test_a_definition_must_be_a_mapping_and_name_its_node() -> None:
    with pytest.raises(NodeDefinitionError, match=r"flows/x\.md: expected a mapping of fields, got list"):
        build_node("x", [1], None, source="flows/x.md")  # type: ignore[arg-type]
    with pytest.raises(NodeDefinitionError, match="field 'id': is required"):
        build_node("", {}, None, source="flows/x.md")


def test_only_a_confirm_input_gets_yes_and_no_options() -> None:
    assert build({"input_type": "text"}).input_options == ()
    assert build({"input_type": "confirm"}).input_options == ("yes", "no")


def nested_mapping(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def test_mappings_count_towards_the_depth_limit_too() -> None:
    build({"default_context": {"v": nested_mapping(64)}})
    field = "default_context.v" + ".k" * 65
    message = fails({"default_context": {"v": nested_mapping(65)}}, field)
    assert message.endswith("nested more than 64 levels deep")


def test_metadata_depth_and_size_are_limited() -> None:
    # The top-level key is not a level: 65 nested mappings under it are the deepest allowed.
    node = build({"metadata": {"a": nested_mapping(65)}})
    assert node.metadata == {"a" + "-k" * 65: "1"}
    message = fails({"metadata": {"a": nested_mapping(66)}}, "metadata")
    assert message.endswith("nested more than 64 levels deep")
    assert build({"metadata": {"l": nested_list(64)}}).metadata == {"l": "[" * 63 + "1" + "]" * 63}
    with pytest.raises(NodeDefinitionError, match="nested more than 64 levels deep"):
        build({"metadata": {"l": nested_list(65)}})
    assert len(build({"metadata": {"m": {f"k{n}": n for n in range(100_000)}}}).metadata) == 100_000
    assert "too many values" in fails({"metadata": {"m": {f"k{n}": n for n in range(100_001)}}}, "metadata")


def nested_schema(depth: int) -> object:
    value: object = "int"
    for _ in range(depth):
        value = [value]
    return value


def test_list_types_in_a_context_schema_are_limited_in_depth() -> None:
    schema = build({"context_schema": {"v": nested_schema(64)}}).context_schema
    assert schema == {"v": "[" * 64 + "int" + "]" * 64}
    assert fails({"context_schema": {"v": nested_schema(65)}}, "context_schema.v").endswith(
        "nested more than 64 levels deep"
    )


@pytest.mark.parametrize("type_text", ["[intx", "x[int]", "[int"])
def test_a_schema_type_with_unbalanced_brackets_is_refused(type_text: str) -> None:
    message = fails({"context_schema": {"v": type_text}}, "context_schema.v")
    assert f"unsupported type '{type_text}'" in message


def test_the_from_fields_of_a_transition_must_be_strings() -> None:
    message = fails({"transitions": [{"to": "a", "from": 3}]}, "transitions[0].from")
    assert message.endswith("expected a string, got number 3")
    build({"transitions": [{"to": "a", "from_node_id": "b"}]})


def test_tool_calls_must_be_mappings_and_imports_named() -> None:
    assert "expected a mapping with 'name'" in fails({"do": "charge"}, "do")
    assert fails({"tools": [None]}, "tools[0]").endswith(
        "expected a tool mapping or the ID of a node to import tools from, got null"
    )
    assert "empty tool import" in fails({"tools": [""]}, "tools[0]")


def test_a_change_to_a_tool_library_reaches_every_importer_however_indirect() -> None:
    drafts = {
        "lib": build_draft("lib", {"tools": [{"name": "t"}]}, None, source="lib.yaml"),
        "mid": build_draft("mid", {"tools": ["lib"]}, None, source="mid.yaml"),
        "top": build_draft("top", {"tools": ["mid"]}, None, source="top.yaml"),
        "other": build_draft("other", {}, None, source="other.yaml"),
    }
    assert importers_of(drafts, ["lib"]) == {"lib", "mid", "top"}
    assert importers_of(drafts, ["mid"]) == {"mid", "top"}
    assert importers_of(drafts, ["other"]) == {"other"}


def test_lists_of_fields_and_schema_entries_count_towards_the_size_limit() -> None:
    assert "too many values" in fails({"input_options": ["x"] * 100_001}, "input_options")
    schema = {f"k{n}": "int" for n in range(100_000)}
    assert len(build({"context_schema": schema}).context_schema) == 100_000  # one value each: at the limit
    schema["one-more"] = "int"
    assert "too many values" in fails({"context_schema": schema}, "context_schema.one-more")
