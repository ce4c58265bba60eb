"""Built-in functions (eq … printf) and trellis's default / coalesce / toJson
(docs/engine.md, "Templates")."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from trellis.errors import TemplateError
from trellis.templates import compile_template


def render(text: str, data: dict[str, Any] | None = None) -> str:
    return compile_template(text).render(data or {})


def fails(text: str, data: dict[str, Any] | None = None) -> str:
    with pytest.raises(TemplateError) as caught:
        render(text, data)
    message = str(caught.value)
    assert message.startswith("template execution failed: ")
    return message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ eq 1 1 }}", "true"),
        ("{{ eq 1 2 }}", "false"),
        ("{{ eq 2 1 3 2 }}", "true"),  # eq a b c d = a==b || a==c || a==d
        ("{{ eq 2 1 3 4 }}", "false"),
        ("{{ eq 1 1.0 }}", "true"),  # ints and floats compare numerically
        ('{{ eq 1 "1" }}', "false"),  # different kinds are simply unequal
        ("{{ eq true 1 }}", "false"),  # a bool is not a number
        ('{{ eq .s "abc" }}', "true"),
        ("{{ eq .missing nil }}", "true"),
        ("{{ eq .missing 0 }}", "false"),
        ("{{ ne 1 2 }}", "true"),
        ('{{ ne "a" "a" }}', "false"),
        ("{{ lt 1 2.5 }}", "true"),
        ("{{ le 2 2 }}", "true"),
        ("{{ gt 2 2 }}", "false"),
        ("{{ ge 2 2.0 }}", "true"),
        ('{{ lt "apple" "banana" }}', "true"),
        ('{{ gt "b" "a" }}', "true"),
    ],
)
def test_comparisons(text: str, expected: str) -> None:
    assert render(text, {"s": "abc"}) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{{ lt 1 "2" }}', "incompatible types for comparison: int and string"),
        ("{{ lt true false }}", "invalid type for comparison: bool"),
        ("{{ gt .missing 1 }}", "invalid type for comparison: <nil>"),
        ("{{ eq .m .m }}", "non-comparable types"),
    ],
)
def test_comparison_errors(text: str, problem: str) -> None:
    message = fails(text, {"m": {"a": 1}})
    assert problem in message
    assert "error calling" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ and 1 0 2 }}", "0"),  # first false argument
        ("{{ and 1 2 }}", "2"),  # else the last
        ('{{ or 0 "" "x" 3 }}', "x"),  # first true argument
        ('{{ or 0 "" }}', ""),  # else the last
        ("{{ not 0 }}", "true"),
        ("{{ not .l }}", "false"),
        ("{{ if and .a (not .b) }}yes{{ end }}", "yes"),
        ("{{ .a | and 1 }}", "1"),
    ],
)
def test_logic(text: str, expected: str) -> None:
    assert render(text, {"a": 1, "b": 0, "l": [1]}) == expected


def test_and_or_stop_evaluating_once_the_answer_is_known() -> None:
    # The second operand would be an error (field on a string) if it were evaluated.
    assert render("{{ and .zero .s.x }}", {"zero": 0, "s": "str"}) == "0"
    assert render("{{ or .one .s.x }}", {"one": 1, "s": "str"}) == "1"
    assert render("{{ if or .one .s.x }}ok{{ end }}", {"one": 1, "s": "str"}) == "ok"


def test_len_counts_items_and_utf8_bytes() -> None:
    data = {"l": [1, 2, 3], "m": {"a": 1}, "s": "abc", "u": "é"}
    assert render("{{ len .l }} {{ len .m }} {{ len .s }} {{ len .u }}", data) == "3 1 3 2"
    assert "len of type int" in fails("{{ len 3 }}")
    assert "len of nil" in fails("{{ len .missing }}")
    assert "len of type bool" in fails("{{ len true }}")


def test_index_on_lists_and_mappings() -> None:
    data = {"l": ["a", ["b", "c"]], "m": {"k": {"x": 1}}}
    assert render("{{ index .l 0 }} {{ index .l 1 1 }} {{ index .m \"k\" \"x\" }}", data) == "a c 1"
    assert render('{{ index .m "nope" }}', data) == "<no value>"
    assert render("{{ index .l }}", data) == "[a [b c]]"
    assert "index out of range: 5" in fails("{{ index .l 5 }}", data)
    assert "index out of range: -1" in fails("{{ index .l -1 }}", data)
    assert "cannot index slice/array with type string" in fails('{{ index .l "0" }}', data)
    assert "index of untyped nil" in fails("{{ index .missing 0 }}", data)


def test_print_and_printf() -> None:
    data = {"i": 3, "f": 2.5, "s": "hi", "b": True, "n": None, "l": [1, "x"]}
    assert render('{{ print .i .f "s" .n 1 }}', data) == "3 2.5s<nil> 1"  # Go's Sprint spacing
    assert render('{{ println "a" 1 }}', data) == "a 1\n"
    cases = {
        "%v": ("l", "[1 x]"),
        "%s": ("s", "hi"),
        "%d": ("i", "3"),
        "%q": ("s", '"hi"'),
        "%f": ("f", "2.500000"),
        "%.2f": ("f", "2.50"),
        "%t": ("b", "true"),
        "%5d": ("i", "    3"),
        "%-4s|": ("s", "hi  |"),
        "%03d": ("i", "003"),
        "%x": ("i", "3"),
        "%T": ("f", "float64"),
        "%e": ("f", "2.500000e+00"),
        "%g": ("f", "2.5"),
        "%v%%": ("i", "3%"),
    }
    for verb, (key, expected) in cases.items():
        assert render(f'{{{{ printf "{verb}" .{key} }}}}', data) == expected, verb
    assert render('{{ printf "%.2f" .i }}', data) == "3.00"  # ints are accepted by float verbs


def test_printf_mismatches_print_like_go_instead_of_failing() -> None:
    data = {"i": 3, "s": "x"}
    assert render('{{ printf "%d" .s }}', data) == "%!d(string=x)"
    assert render('{{ printf "%s" .i }}', data) == "%!s(int=3)"
    assert render('{{ printf "%d %d" .i }}', data) == "3 %!d(MISSING)"
    assert render('{{ printf "%d" .i 4 }}', data) == "3%!(EXTRA int=4)"
    assert render('{{ printf "%" }}', data) == "%!(NOVERB)"


def test_default_uses_the_fallback_only_for_zero_values() -> None:
    data = {"zero": 0, "empty": "", "no": False, "fzero": 0.0, "null": None, "list": [], "map": {}, "v": "x"}
    for key in ("zero", "empty", "no", "fzero", "null", "missing"):
        assert render(f'{{{{ default "fb" .{key} }}}}', data) == "fb", key
    # Empty lists and maps are NOT zero for default (while `if` treats them as false).
    assert render('{{ default "fb" .list }}', data) == "[]"
    assert render('{{ default "fb" .map }}', data) == "map[]"
    assert render('{{ default "fb" .v }}', data) == "x"
    assert render('{{ .missing | default "piped" }}', data) == "piped"


def test_coalesce_returns_the_first_non_zero_value_or_nil() -> None:
    data = {"a": None, "b": "", "c": 0, "d": "found", "e": "later"}
    assert render("{{ coalesce .a .b .c .d .e }}", data) == "found"
    assert render("{{ coalesce .a .b .c }}", data) == "<no value>"
    assert render("{{ coalesce }}", data) == "<no value>"
    assert render("{{ coalesce .a .list }}", {"list": []}) == "[]"


def test_to_json_is_compact_sorted_and_escapes_html_characters() -> None:
    data = {"b": [1, 2.5, None, True], "a": {"y": "<tag> & co", "x": "é"}}
    text = render("{{ toJson . }}", data)
    assert text == '{"a":{"x":"é","y":"\\u003ctag\\u003e \\u0026 co"},"b":[1,2.5,null,true]}'
    assert json.loads(text) == data
    assert render("{{ toJson .missing }}") == "null"
    assert render('{{ toJson "a\\"b" }}') == '"a\\"b"'


def test_to_json_failures_are_template_errors() -> None:
    assert "toJson" in fails("{{ toJson .x }}", {"x": float("nan")})
    assert "toJson" in fails("{{ toJson .x }}", {"x": object()})


def test_html_and_urlquery_builtins() -> None:
    assert render('{{ html "<a href=\'x\'>" }}') == "&lt;a href=&#39;x&#39;&gt;"
    assert render('{{ urlquery "a b&c" }}') == "a+b%26c"


# name → (fewest, most arguments; None = no limit), as Go's text/template has them.
ARITY = {
    "eq": (2, None), "ne": (2, 2), "lt": (2, 2), "le": (2, 2), "gt": (2, 2), "ge": (2, 2),
    "and": (1, None), "or": (1, None), "not": (1, 1), "len": (1, 1), "index": (1, None),
    "print": (0, None), "println": (0, None), "printf": (1, None), "html": (0, None),
    "urlquery": (0, None), "default": (2, 2), "coalesce": (0, None), "toJson": (1, 1),
}


@pytest.mark.parametrize("name", ARITY)
def test_each_function_takes_the_number_of_arguments_go_allows(name: str) -> None:
    low, high = ARITY[name]
    want = f"{low}" if high == low else f"at least {low}" if high is None else f"{low} to {high}"

    def call(count: int) -> str:
        return "{{ " + " ".join([name, *['"1"'] * count]) + " }}"

    wrong = f"wrong number of args for {name}: want {want} got"
    compile_template(call(low))
    if low > 0:
        with pytest.raises(TemplateError, match=rf"{wrong} {low - 1}"):
            compile_template(call(low - 1))
    if high is None:
        compile_template(call(low + 3))
    else:
        with pytest.raises(TemplateError, match=rf"{wrong} {high + 1}"):
            compile_template(call(high + 1))


def test_comparing_with_maps_and_lists() -> None:
    data = {"m": {"a": 1}}
    # A map is equal to nothing, but can be compared with nil, on either side ...
    assert render("{{ eq .m nil }} {{ eq nil .m }} {{ ne .m nil }}", data) == "false false true"
    # ... and with nothing else.
    assert "non-comparable types map[string]interface {} and int" in fails("{{ eq .m 1 }}", data)
    assert "non-comparable types int and map[string]interface {}" in fails("{{ eq 1 .m }}", data)
    assert render("{{ eq false 0 }} {{ ne false 0 }}") == "false true"  # false is a bool, not a number


def test_index_edges() -> None:
    data = {"l": ["a", "b", "c"], "m": {"a": 1}, "k": [1]}
    assert render("{{ index .l 2 }}", data) == "c"
    assert "index out of range: 3" in fails("{{ index .l 3 }}", data)
    assert "cannot index map with key of type []interface {}" in fails("{{ index .m .k }}", data)


def test_to_json_takes_any_mapping() -> None:
    assert render("{{ toJson .p }}", {"p": MappingProxyType({"b": 1, "a": [2]})}) == '{"a":[2],"b":1}'


def test_printf_needs_a_string_format() -> None:
    assert "printf format must be a string, not int" in fails("{{ printf 1 }}")
