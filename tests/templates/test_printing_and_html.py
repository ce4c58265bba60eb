"""Value printing and the HTML-escaping variant (docs/engine.md, "Templates")."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.templates import Template, compile_template


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        (3, "3"),
        (-12, "-12"),
        (10**20, "100000000000000000000"),  # Python ints print plainly, however large
        (2.0, "2"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (1e6, "1e+06"),  # Go's float artefact, kept for compatibility
        (True, "true"),
        (False, "false"),
        ("text", "text"),
        ("", ""),
        ([1, "a", None, 2.0], "[1 a <nil> 2]"),
        ({"b": 1, "a": [True]}, "map[a:[true] b:1]"),
        ({}, "map[]"),
        ([], "[]"),
        (None, "<no value>"),
    ],
)
def test_values_print_like_go(value: Any, printed: str) -> None:
    assert compile_template("{{ .v }}").render({"v": value}) == printed


def test_html_variant_escapes_action_output_but_not_template_text() -> None:
    template = compile_template("<p title=\"x\">{{ .v }}</p>", html=True)
    assert template.render({"v": "<b>\"it's\" & +</b>"}) == (
        "<p title=\"x\">&lt;b&gt;&#34;it&#39;s&#34; &amp; &#43;&lt;/b&gt;</p>"
    )


def test_html_variant_escapes_function_results_and_collections() -> None:
    template = compile_template('{{ printf "<%s>" .v }} {{ .l }} {{ toJson .m }}', html=True)
    assert template.render({"v": "i", "l": ["<"], "m": {"k": "v"}}) == (
        "&lt;i&gt; [&lt;] {&#34;k&#34;:&#34;v&#34;}"
    )


def test_html_variant_prints_text_without_special_characters_as_it_is() -> None:
    plain = "plain words, 100%"
    assert compile_template("[{{ .v }}]", html=True).render({"v": plain}) == f"[{plain}]"


def test_html_variant_prints_nothing_for_missing_values() -> None:
    # Go's html/template drops untyped nil instead of printing "<no value>".
    assert compile_template("[{{ .missing }}]", html=True).render({}) == "[]"
    assert compile_template("[{{ .missing }}]").render({}) == "[<no value>]"


def test_text_variant_does_not_escape() -> None:
    assert compile_template("{{ .v }}").render({"v": "<b>&</b>"}) == "<b>&</b>"


def test_a_template_made_directly_is_a_text_template() -> None:
    assert Template("{{ .x }}").render({"x": "<b>"}) == "<b>"
