"""Field access, missing keys, if/else, range, with, variables and trim markers."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.errors import TemplateError
from trellis.templates import Template, compile_template


def render(text: str, data: dict[str, Any] | None = None, **kwargs: Any) -> str:
    return compile_template(text, **kwargs).render(data or {})


def test_fields_and_chains_read_mapping_keys() -> None:
    data = {"name": "Ada", "sys": {"ans": "yes", "deep": {"x": 7}}}
    assert render("Hello {{ .name }}, you are at {{ .sys.ans }}", data) == "Hello Ada, you are at yes"
    assert render("{{ .sys.deep.x }}", data) == "7"


def test_dot_and_dollar_print_the_whole_data() -> None:
    data = {"b": 2, "a": [1, "x"]}
    assert render("{{ . }}", data) == "map[a:[1 x] b:2]"
    assert render("{{ with .a }}{{ $.b }}{{ end }}", data) == "2"


@pytest.mark.parametrize(
    "text",
    ["{{ .missing }}", "{{ .nothing.below.it }}", "{{ .null }}", "{{ .null.x }}", "{{ index .m \"k\" }}"],
)
def test_missing_null_and_below_missing_print_no_value(text: str) -> None:
    assert render(text, {"null": None, "m": {}}) == "<no value>"


def test_field_on_a_string_is_an_execution_error_naming_the_place() -> None:
    with pytest.raises(TemplateError) as caught:
        render("Hi {{ .name.first }}", {"name": "Ada"})
    message = str(caught.value)
    assert message.startswith("template execution failed: ")
    assert "1:7" in message and ".name.first" in message
    assert "can't evaluate field first in type string" in message


def test_constant_text_is_returned_untouched_without_parsing() -> None:
    text = "no actions here, even a broken {{ would not } matter"
    template = compile_template(text.replace("{{", "{ {"))
    assert template.is_constant
    assert template.render({}) == text.replace("{{", "{ {")
    assert not compile_template("{{ .a }}").is_constant
    assert Template("x").source == "x"


def test_if_else_if_else() -> None:
    text = "{{ if .a }}A{{ else if .b }}B{{ else if .c }}C{{ else }}none{{ end }}"
    assert render(text, {"a": 1}) == "A"
    assert render(text, {"b": "x"}) == "B"
    assert render(text, {"c": [0]}) == "C"
    assert render(text, {"a": 0, "b": "", "c": []}) == "none"


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (False, False), (0, False), (0.0, False), ("", False), (None, False), ([], False), ({}, False),
        (True, True), (1, True), (-0.5, True), ("0", True), ([0], True), ({"k": None}, True),
    ],
)
def test_go_truthiness(value: Any, truthy: bool) -> None:
    assert render("{{ if .v }}yes{{ else }}no{{ end }}", {"v": value}) == ("yes" if truthy else "no")


def test_range_over_list_sets_dot() -> None:
    assert render("{{ range .l }}[{{ . }}]{{ end }}", {"l": ["a", 2, 2.5]}) == "[a][2][2.5]"


def test_range_with_index_and_value_variables() -> None:
    assert render("{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}", {"l": ["a", "b"]}) == "0=a;1=b;"
    assert render("{{ range $v := .l }}{{ $v }}{{ end }}", {"l": ["a", "b"]}) == "ab"


def test_range_over_mapping_is_in_sorted_key_order() -> None:
    data = {"m": {"b": 2, "c": 3, "a": 1}}
    assert render("{{ range $k, $v := .m }}{{ $k }}{{ $v }} {{ end }}", data) == "a1 b2 c3 "
    assert render("{{ range .m }}{{ . }}{{ end }}", data) == "123"


def test_range_else_runs_for_empty_or_missing() -> None:
    text = "{{ range .l }}x{{ else }}empty{{ end }}"
    assert render(text, {"l": []}) == "empty"
    assert render(text, {}) == "empty"
    assert render(text, {"l": {}}) == "empty"
    assert render(text, {"l": [1]}) == "x"


def test_range_over_an_integer_counts() -> None:
    assert render("{{ range 3 }}{{ . }}{{ end }}") == "012"


def test_range_over_a_string_is_an_error() -> None:
    with pytest.raises(TemplateError, match="range can't iterate over abc"):
        render("{{ range .s }}{{ end }}", {"s": "abc"})


def test_break_and_continue_keep_output_already_produced() -> None:
    text = (
        "{{ range .l }}<{{ if eq . 2 }}{{ continue }}{{ end }}"
        "{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}>{{ end }}"
    )
    assert render(text, {"l": [1, 2, 3, 4, 5]}) == "<1><<3><"


def test_with_sets_dot_and_has_else() -> None:
    text = "{{ with .user }}{{ .name }}{{ else }}anonymous{{ end }}"
    assert render(text, {"user": {"name": "Ada"}}) == "Ada"
    assert render(text, {"user": {}}) == "anonymous"
    assert render("{{ with .a }}a{{ else with .b }}{{ . }}{{ end }}", {"b": "B"}) == "B"


def test_variables_declare_and_assign() -> None:
    text = "{{ $x := .a }}{{ $x }}{{ if true }}{{ $x = 5 }}{{ $y := 9 }}{{ $y }}{{ end }}{{ $x }}"
    assert render(text, {"a": 1}) == "195"


def test_inner_declaration_shadows_until_end() -> None:
    assert render("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}") == "21"


def test_variable_fields_and_dollar_inside_range() -> None:
    data = {"users": [{"n": "a"}, {"n": "b"}], "sep": "-"}
    assert render("{{ range $u := .users }}{{ $u.n }}{{ $.sep }}{{ end }}", data) == "a-b-"


def test_with_declaration_is_visible_in_body() -> None:
    assert render("{{ with $v := .a }}{{ $v }}{{ . }}{{ end }}", {"a": "z"}) == "zz"


def test_trim_markers_remove_surrounding_whitespace() -> None:
    assert render("a  \n {{- .x -}} \n\t b", {"x": 1}) == "a1b"
    assert render("a {{- .x }} b", {"x": 1}) == "a1 b"
    assert render("{{ -3 }}") == "-3"


def test_comments_produce_nothing() -> None:
    assert render("a{{/* a comment */}}b") == "ab"
    assert render("a {{- /* trimmed */ -}} b") == "ab"


def test_comments_beside_actions_keep_the_text_around_them() -> None:
    assert render("a{{.x}}b{{/* c */}}d", {"x": "X"}) == "aXbd"
    assert render("a{{/* c */}}b{{.x}}d", {"x": "X"}) == "abXd"
    assert render("a {{.x}} b {{- /* c */ -}} d {{.x}}", {"x": "X"}) == "a X bd X"
    assert render("{{.x}}{{/* c */}}{{/* d */}}{{.x}}e", {"x": "X"}) == "XXe"


def test_parenthesised_pipelines_and_fields_on_them() -> None:
    data = {"l": [{"n": "first"}], "a": 2}
    assert render("{{ (index .l 0).n }}", data) == "first"
    assert render("{{ printf \"%d-%d\" (len .l) .a }}", data) == "1-2"


def test_pipelines_pass_the_value_as_last_argument() -> None:
    assert render('{{ .a | printf "%s!" }}', {"a": "hi"}) == "hi!"
    assert render('{{ "x" | printf "%s%s" "y" }}') == "yx"
    assert render("{{ .n | eq 3 }}", {"n": 3}) == "true"
    assert render("{{ .missing | default \"dflt\" | printf \"<%s>\" }}") == "<dflt>"


def test_literals() -> None:
    assert render("{{ 42 }} {{ -1.5 }} {{ 2.0 }} {{ 0x1F }} {{ 1e3 }} {{ 'a' }}") == "42 -1.5 2 31 1000 97"
    assert render('{{ "tab\\there\\u00e9\\"" }}') == 'tab\there\u00e9"'
    assert render("{{ `raw \\n {{ stays` }}") == "raw \\n {{ stays"
    assert render("{{ true }} {{ false }}") == "true false"
    assert render("{{ print nil }}") == "<nil>"


def test_break_leaves_only_the_innermost_range() -> None:
    text = "{{ range .a }}{{ range $.b }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}|{{ end }}"
    assert render(text, {"a": [1, 2], "b": [1, 2, 3]}) == "1|1|"


def test_trim_markers_on_control_actions() -> None:
    text = "{{- if .a -}}\n  yes\n{{- else if .b -}}\n  bee\n{{- else -}}\n  no\n{{- end }}\n"
    assert render(text, {"a": 1}) == "yes\n"
    assert render(text, {"b": 1}) == "bee\n"
    assert render(text, {}) == "no\n"


def test_number_literal_forms() -> None:
    assert render("{{ 1_000 }} {{ +3 }} {{ .5 }} {{ 017 }} {{ 0b101 }} {{ 0o17 }}") == "1000 3 0.5 15 5 15"


def test_range_over_a_copy_of_data_does_not_mutate_it() -> None:
    data = {"l": [3, 1, 2], "m": {"b": 1, "a": 2}}
    render("{{ range .l }}{{ end }}{{ range .m }}{{ end }}{{ $x := .l }}", data)
    assert data == {"l": [3, 1, 2], "m": {"b": 1, "a": 2}}


def test_a_function_name_as_an_argument_is_called_with_no_arguments() -> None:
    assert render('{{ printf "[%s]" print }}') == "[]"
    assert render('{{ printf "[%v|%v]" html urlquery }}') == "[|]"


def test_range_over_an_int_counts_from_zero() -> None:
    assert render("{{ range $v := 3 }}{{ $v }}{{ end }}") == "012"
    assert render("{{ range 0 }}x{{ else }}none{{ end }}") == "none"


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("{{ `raw {{ }}` }}", "raw {{ }}"),
        ("{{ 'a' }}|{{ 'a' | printf \"%c\" }}", "97|a"),
        ('{{ "a\\"b" }}', 'a"b'),
        ("{{ 0x1F }} {{ 0b101 }} {{ 0o17 }} {{ 1_000 }}", "31 5 15 1000"),
        ("{{ .5 }} {{ 1e3 }} {{ -3 }} {{ +3 }} {{ 1. }}", "0.5 1000 -3 3 1"),
        ('{{ printf "%v" -1.5e2 }}', "-150"),
        ("{{ . }}|{{ $ }}", "map[l:[5 6] x:1]|map[l:[5 6] x:1]"),
        ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
        ("{{.x}}|{{- .x -}}|{{3 -}} |{{- 3}}", "1|1|3|3"),
        ("{{ .x}}{{/* c */ -}}  d", "1d"),
        ("a  {{- /* c */}}b|{{/**/}}", "ab|"),
        ("{{ .x }} {{ .x -}}\n\n  z", "1 1z"),
        ("{{ if 0 }}a{{ else if .x }}b{{ else }}c{{ end }}", "b"),
        # nothing between the tokens
        ('{{.x|printf "%d"}}|{{(.x)}}|{{.x}}{{.x}}|{{1}}|{{-1}}|{{.5}}', "1|1|11|1|-1|0.5"),
        ("{{$a:=.x}}{{$a}}|{{$b:=1}}{{$b=2}}{{$b}}", "1|2"),
        ("{{range $i,$v:=.l}}{{$i}}{{$v}}{{end}}", "0516"),
        ("{{ `` }}|{{`a`}}", "|a"),
        # whitespace and trim markers at the edges
        ("  a{{.x}}", "  a1"),
        ("x- {{ .x }}  ", "x- 1  "),
        ("{{ .x -}}ab", "1ab"),
        ("{{ .x  -}} y|{{.x -}}  \n y", "1y|1y"),
        ("a{{/*/ x */}}b", "ab"),
    ],
)
def test_literals_and_delimiters(text: str, printed: str) -> None:
    assert render(text, {"x": 1, "l": [5, 6]}) == printed


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        (r'{{ printf "%q" "\a\b\f\n\r\t\v\\\"" }}', r'"\a\b\f\n\r\t\v\\\""'),
        (r"{{ '\'' }}|{{ '\x41' }}|{{ 'é' }}", "39|65|233"),
        (r'{{ "\x41\u00e9\U0001F600" }}|{{ "\101" }}|{{ "\101BC" }}', "Aé😀|A|ABC"),
        (r'{{ "\377" | len }}', "3"),  # the highest octal escape is accepted (a lone byte prints as U+FFFD)
        (r'{{ "\U0010FFFF" | len }}|{{ "\uE000" | len }}|{{ "\uD7FF" | len }}', "4|3|3"),
        ("{{ -0x10 }} {{ +0b11 }} {{ 0o17 }} {{ 017 }} {{ -017 }} {{ 0x_1 }}", "-16 3 15 15 -15 1"),
        ("{{ 1_000 }} {{ 1.5e3 }} {{ 0 }} {{ 00 }} {{ -2.5 }}", "1000 1500 0 0 -2.5"),
        ("{{ 1E2 }} {{ 1e+2 }} {{ .5e1 }}", "100 100 5"),
    ],
)
def test_escapes_and_number_literals(text: str, printed: str) -> None:
    assert render(text) == printed


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("{{ with .a }}x{{ else with .b }}y{{ else }}z{{ end }}", "y"),
        ("{{ if .a }}x{{ else if .b }}y{{ end }}", "y"),
        # an inner $x ends with its block
        ("{{ $x := 1 }}{{ if 1 }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}", "21"),
        ("{{ $x := 1 }}{{ $x := $x }}{{ $x }}", "1"),  # the right side sees the outer $x
        ("{{ $i := 0 }}{{ $v := 0 }}{{ range $i, $v = .l }}{{ end }}{{ $i }}{{ $v }}", "12"),
        ("{{ with $a := .b }}{{ $a }}{{ end }}", "B"),
        ('{{ (index .m "k").z }}', "7"),
    ],
)
def test_branches_variables_and_chains(text: str, printed: str) -> None:
    assert render(text, {"l": [1, 2], "b": "B", "m": {"k": {"z": 7}}}) == printed


def test_a_break_in_an_inner_ranges_else_leaves_the_outer_range() -> None:
    text = "{{ range .l }}{{ . }}{{ range $.e }}{{ else }}{{ break }}{{ end }}x{{ end }}"
    assert render(text, {"l": [1, 2], "e": []}) == "1"
