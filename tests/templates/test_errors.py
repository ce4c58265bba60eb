"""Parse errors fail at compile time with the template text and a line:col location."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.errors import TemplateError
from trellis.templates import compile_template


@pytest.mark.parametrize(
    ("text", "location", "problem"),
    [
        ("Hi {{ user_name }}", "1:7", 'function "user_name" not defined'),
        ("{{ end }}", "1:4", "unexpected {{end}}"),
        ("{{ else }}", "1:4", "unexpected {{else}}"),
        ("{{ if .a }}x", "1:4", "{{if}} has no {{end}}"),
        ("{{ range .a }}x{{ else }}y", "1:27", "expected {{end}} for {{range}}"),
        ("{{ $x }}", "1:4", 'undefined variable "$x"'),
        ("{{ $x = 1 }}", "1:4", 'undefined variable "$x"'),
        ("{{ .a ", "1:1", "unclosed action"),
        ("{{ }}", "1:4", "missing value for command"),
        ("{{ .a | .b }}", "1:9", "can't give argument to non-function .b"),
        ("{{ .a 1 }}", "1:4", "can't give argument to non-function .a"),
        ("{{ nil }}", "1:4", "nil is not a command"),
        ("{{ eq 1 }}", "1:4", "wrong number of args for eq: want at least 2 got 1"),
        ("{{ default 1 2 3 }}", "1:4", "wrong number of args for default: want 2 got 3"),
        ("{{ .a | }}", "1:7", "missing command after |"),
        ("{{ (.a }}", "1:8", "unclosed left paren"),
        ('{{ "abc }}', "1:4", "unterminated quoted string"),
        ("{{ 1x }}", "1:4", "bad number syntax"),
        ("{{ break }}", "1:4", "{{break}} outside {{range}}"),
        ('{{ define "x" }}{{ end }}', "1:4", "not supported"),
        ("{{/* x */ .a }}", "1:8", "comment ends before closing delimiter"),
        ("{{/* never closed", "1:1", "unclosed comment"),
        ("line one\n  {{ .a @ }}", "2:9", "unexpected '@'"),
        ("{{ with $a, $b := .x }}{{ end }}", "1:11", "too many declarations in with"),
        ("{{ `raw }}", "1:4", "unterminated raw quoted string"),
        ("{{ 'a }}", "1:4", "unterminated character constant"),
        ('{{ "a\nb" }}', "1:4", "unterminated quoted string"),
        ("{{ 'ab' }}", "1:4", "malformed character constant 'ab'"),
        ("{{ 1e }}", "1:4", "bad number syntax: '1e'"),
        ("{{ 3x }}", "1:4", "bad number syntax: '3x'"),
        ("{{ - }}", "1:4", "bad number syntax: '-'"),
        ("{{ 0x }}", "1:4", "bad number syntax: '0x'"),
        ("{{ 0b2 }}", "1:4", "bad number syntax: '0b2'"),
        ("{{ .x: }}", "1:6", "expected :="),
        ("{{ (1 }}", "1:7", "unclosed left paren"),
        ("{{ 1) }}", "1:5", "unexpected right paren"),
        ("{{ len .l)}}", "1:10", "unexpected right paren"),
        ("{{ .x@ }}", "1:6", "bad character '@'"),
        ("x {{ /* c */ }}", "1:6", "unexpected '/' in action"),
        ("{{ .x.1 }}", "1:6", "unexpected number '.1' in operand"),
        ("{{ $a.b }}", "1:4", 'undefined variable "$a"'),
    ],
)
def test_parse_errors_name_the_template_the_place_and_the_problem(
    text: str, location: str, problem: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text)
    message = str(caught.value)
    assert message.startswith(f"invalid template '{text}': {location}: ")
    assert problem in message


def test_the_template_name_prefixes_the_location() -> None:
    with pytest.raises(TemplateError, match=r"'\{\{ foo \}\}': node/start\.md:1:4: function \"foo\""):
        compile_template("{{ foo }}", name="node/start.md")


def test_execution_errors_say_where_and_what() -> None:
    template = compile_template("a\n{{ if .ok }}{{ len .n }}{{ end }}", name="greet")
    assert template.render({"ok": False, "n": 1}) == "a\n"
    with pytest.raises(TemplateError) as caught:
        template.render({"ok": True, "n": 1})
    assert str(caught.value) == (
        "template execution failed: greet:2:16: at <len .n>: error calling len: len of type int"
    )


NO_FIELD_X = "can't evaluate field x in type"


@pytest.mark.parametrize(
    ("text", "data", "message"),
    [
        # A field of something that is not a map, alone and in a chain.
        ("{{ range .l }}{{ .x }}{{ end }}", {"l": ["a"]}, "t:1:18: at <.x>: " + NO_FIELD_X + " string"),
        ("{{ range .l }}{{ .x.y }}{{ end }}", {"l": [1]}, "t:1:18: at <.x.y>: " + NO_FIELD_X + " int"),
        ("{{ range .s }}x{{ end }}", {"s": "abc"}, "t:1:4: at <range .s>: range can't iterate over abc"),
        (
            "{{ range $i, $v := 3 }}x{{ end }}",
            {},
            "t:1:4: at <range $i, $v := 3>: can't use int to iterate over more than one variable",
        ),
    ],
)
def test_execution_errors_name_the_action_that_failed(
    text: str, data: dict[str, object], message: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text, name="t").render(data)
    assert str(caught.value) == f"template execution failed: {message}"


def test_error_message_keeps_a_long_template_short() -> None:
    text = "x" * 500 + "{{ nope }}"
    with pytest.raises(TemplateError) as caught:
        compile_template(text)
    assert len(str(caught.value)) < 300
    assert "1:504" in str(caught.value)


def test_deep_nesting_is_a_clear_parse_error_not_a_crash() -> None:
    with pytest.raises(TemplateError, match="nested deeper than 100 levels"):
        compile_template("{{ if .a }}" * 500 + "{{ end }}" * 500)
    with pytest.raises(TemplateError, match="nested deeper than 100 levels"):
        compile_template("{{ " + "(" * 500 + "1" + ")" * 500 + " }}")
    assert compile_template("{{ if .a }}" * 50 + "x" + "{{ end }}" * 50).render({"a": 1}) == "x"


def test_deeply_nested_data_is_an_execution_error_not_a_crash() -> None:
    value: list[object] = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(TemplateError) as caught:
        compile_template("{{ .v }}", name="deep").render({"v": value})
    assert str(caught.value) == "template execution failed: deep:value nested too deeply"


def test_a_template_body_is_quoted_whole_up_to_200_characters() -> None:
    for size in (199, 200, 201):
        text = "{{ nope }}" + "x" * (size - 10)
        with pytest.raises(TemplateError) as caught:
            compile_template(text)
        quoted = str(caught.value).split("'")[1]
        assert quoted == (text if size <= 200 else text[:200] + "…"), size


def test_errors_without_a_template_name_start_at_the_location() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("ab\ncd {{ foo }}")
    assert str(caught.value) == "invalid template 'ab\ncd {{ foo }}': 2:7: function \"foo\" not defined"
    with pytest.raises(TemplateError) as caught:
        compile_template("{{ len 3 }}").render({})
    assert str(caught.value) == (
        "template execution failed: 1:4: at <len 3>: error calling len: len of type int"
    )


def test_a_failure_inside_the_data_becomes_a_template_error() -> None:
    class Exploding(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("disk on fire")

    template = compile_template("{{ .a.b }}", name="n")
    with pytest.raises(TemplateError) as caught:
        template.render({"a": Exploding()})
    assert str(caught.value) == "template execution failed: n:RuntimeError: disk on fire"
    with pytest.raises(TemplateError) as caught:
        compile_template("{{ .a.b }}").render({"a": Exploding()})
    assert str(caught.value) == "template execution failed: RuntimeError: disk on fire"


def test_a_template_shows_what_it_was_made_from() -> None:
    shown = "Template('a{{ .x }}', html=True, name='n')"
    assert repr(compile_template("a{{ .x }}", html=True, name="n")) == shown
    assert repr(compile_template("plain")) == "Template('plain', html=False, name='')"


@pytest.mark.parametrize(
    ("text", "location", "problem"),
    [
        ("a {{-", "1:5", "bad number syntax: '-'"),
        ("{{ .", "1:1", "unclosed action"),
        ("{{ .x", "1:1", "unclosed action"),
        ("{{ $x", "1:1", "unclosed action"),
        ("{{ 1", "1:1", "unclosed action"),
        ("{{ 1.", "1:1", "unclosed action"),
        ("{{ (", "1:1", "unclosed action"),
        ("{{ -", "1:4", "bad number syntax: '-'"),
        ("{{ `a", "1:4", "unterminated raw quoted string"),
        ('{{ "a', "1:4", "unterminated quoted string"),
        ("{{ 'a", "1:4", "unterminated character constant"),
        ("{{/* x", "1:1", "unclosed comment"),
        ("{{ 1+ }}", "1:5", "bad number syntax: '+'"),
        ("{{ 1-}}", "1:5", "bad number syntax: '-'"),
        ("{{ 0x1g }}", "1:4", "bad number syntax: '0x1g'"),
        ("{{ 1e5x }}", "1:4", "bad number syntax: '1e5x'"),
        ("{{ 3 -}", "1:6", "bad number syntax: '-'"),
        ("{{ .x }", "1:7", "unexpected '}' in action"),
    ],
)
def test_a_template_that_stops_short_is_a_parse_error_not_a_crash(
    text: str, location: str, problem: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text)
    assert str(caught.value) == f"invalid template '{text}': {location}: {problem}"


@pytest.mark.parametrize(
    "literal",
    [r'"\'"', r"'\"'", r'"\x4"', r'"\xZZ"', r'"\uD800"', r'"\uDFFF"', r'"\U00110000"', r'"\u12"', r'"\400"',
     r'"\18"', r'"\1"', r'"\q"'],
)
def test_a_bad_escape_is_a_parse_error_naming_the_literal(literal: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("{{ " + literal + " }}")
    assert str(caught.value).endswith(f": 1:4: invalid escape in {literal}")


def test_a_bad_number_is_a_parse_error() -> None:
    with pytest.raises(TemplateError, match=r"1:4: bad number syntax: '0xG'"):
        compile_template("{{ 0xG }}")


@pytest.mark.parametrize(
    ("text", "location", "problem"),
    [
        ("{{ if 1 }}a{{ end }}{{ end }}", "1:24", "unexpected {{end}}"),
        ("{{ if 1 }}a{{ else }}b{{ else }}c{{ end }}", "1:26", "expected {{end}} for {{if}}; found {{else}}"),
        ("{{ end x }}", "1:8", "unexpected identifier 'x' in end"),
        ("{{ if 1 }}{{ else x }}{{ end }}", "1:19", "unexpected identifier 'x' in else"),
        ("{{ if 1 }}x", "1:4", "unexpected end of template: {{if}} has no {{end}}"),
        ("{{ if }}{{ end }}", "1:7", "missing value for if"),
        ("{{ range }}{{ end }}", "1:10", "missing value for range"),
        ("{{ if 1 }}{{ $y := 1 }}{{ end }}{{ $y }}", "1:36", 'undefined variable "$y"'),
        ("{{ $x := $x }}", "1:10", 'undefined variable "$x"'),
        ("{{ range $a, $b }}{{ end }}", "1:14", "range can only initialize variables"),
        ("{{ range $a, 1 := .l }}{{ end }}", "1:14", "range can only initialize variables"),
        ("{{ | .x }}", "1:4", "missing value before | in command"),
        ("{{ print (1 2) }}", "1:11", "can't give argument to non-function 1"),
        ("{{ 1 | 2 }}", "1:8", "can't give argument to non-function 2"),
        ("{{ if 1 x }}{{ end }}", "1:9", 'function "x" not defined'),
        ("{{ range .l }}{{ continue 1 }}{{ end }}", "1:27", "unexpected number '1' in continue"),
        (
            '{{ block "x" . }}',
            "1:4",
            "{{block}} is not supported (only the subset in docs/engine.md, Templates, is)",
        ),
        ("{{ print 1 ) }}", "1:12", "unexpected right paren"),
        ("{{ ( }}", "1:6", "unclosed left paren"),
        ("{{ print () }}", "1:11", "missing value for parenthesized pipeline"),
        ("\n{{ foo }}", "2:4", 'function "foo" not defined'),  # a first newline is a line too
        ("{{ print len }}", "1:4", "wrong number of args for len: want 1 got 0"),
        ("{{ print if }}", "1:10", "unexpected keyword 'if' in operand"),
        ("{{ print , }}", "1:10", "unexpected ',' in operand"),
        ("{{ range .l }}{{ end }}{{ break }}", "1:27", "{{break}} outside {{range}}"),
        ("{{ range .a }}x{{ else }}y", "1:27", "expected {{end}} for {{range}}; found end of template"),
        ("{{ 09 }}", "1:4", "bad number syntax: '09'"),  # a leading 0 means octal
        ("{{ nil.x }}", "1:4", "unexpected . after term 'nil'"),
        ('{{ "a".x }}', "1:4", "unexpected . after term '\"a\"'"),
        ("{{ , }}", "1:4", "unexpected ',' in operand"),
        ("{{ 1 | | 2 }}", "1:8", "unexpected '|' in command"),
    ],
)
def test_grammar_errors_name_the_place_and_the_problem(text: str, location: str, problem: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(text)
    assert str(caught.value) == f"invalid template '{text}': {location}: {problem}"


def test_nesting_is_limited_to_100_levels_of_blocks_and_parentheses_together() -> None:
    def blocks(depth: int, inner: str = "x") -> str:
        return "{{ if 1 }}" * depth + inner + "{{ end }}" * depth

    def parens(depth: int) -> str:
        return "{{ " + "(" * depth + "1" + ")" * depth + " }}"

    assert compile_template(blocks(100)).render({}) == "x"
    assert compile_template(parens(100)).render({}) == "1"
    assert compile_template(blocks(50, parens(50))).render({}) == "1"
    # A closed block or parenthesis gives its level back, no more.
    too_deep = (blocks(101), parens(101), blocks(50, parens(51)))
    too_deep += (blocks(1) + blocks(101), parens(1) + parens(101))
    for text in too_deep:
        with pytest.raises(TemplateError, match="nested deeper than 100 levels"):
            compile_template(text)


def test_execution_errors_point_into_the_template_and_at_the_failing_part() -> None:
    len_of_int = "error calling len: len of type int"
    for text, message in (
        ("\n\n  {{ len 3 }}", f"3:6: at <len 3>: {len_of_int}"),
        ("\n{{ len 3 }}", f"2:4: at <len 3>: {len_of_int}"),
        ("{{ print (len 3) }}", f"1:11: at <len 3>: {len_of_int}"),
        ("{{ print (1).x }}", "1:10: at <(1).x>: can't evaluate field x in type int"),
    ):
        with pytest.raises(TemplateError) as caught:
            compile_template(text).render({})
        assert str(caught.value) == f"template execution failed: {message}"


def test_blocks_and_parentheses_one_after_another_do_not_add_up_to_the_nesting_limit() -> None:
    assert compile_template("{{ if 1 }}{{ end }}" * 150).render({}) == ""
    assert compile_template("{{ (1) }}" * 150).render({}) == "1" * 150
    assert compile_template("{{ range .l }}{{ if 1 }}{{ break }}{{ end }}x{{ end }}").render({"l": [1]}) == ""
