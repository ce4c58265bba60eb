"""Caller data cannot make one render run long or build huge text: range iterations,
output bytes and printf widths are budgeted, and going over is a TemplateError that
names the template and the limit (trellis.evaluation_limits)."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.errors import TemplateError
from trellis.evaluation_limits import (
    DEFAULT_MAX_PRINTF_WIDTH,
    DEFAULT_MAX_RANGE_ITERATIONS,
    DEFAULT_MAX_TEMPLATE_OUTPUT_BYTES,
    EvaluationLimits,
)
from trellis.step_deadline import step_deadline
from trellis.templates import compile_template


def render(text: str, data: dict[str, Any], **limits: int) -> str:
    return compile_template(text, name="flow/n.md:content", limits=EvaluationLimits(**limits)).render(data)


def refused(text: str, data: dict[str, Any], **limits: int) -> str:
    with pytest.raises(TemplateError) as caught:
        render(text, data, **limits)
    message = str(caught.value)
    assert "flow/n.md:content" in message  # where
    return message


# --- range iterations ----------------------------------------------------------------------------


def test_a_range_over_a_huge_number_is_refused_by_default() -> None:
    # The issue's {{ range .n }} with n = 3e7 ran 9.8 s; one over the default is enough here.
    message = refused("{{ range .n }}{{ end }}", {"n": DEFAULT_MAX_RANGE_ITERATIONS + 1})
    assert f"more than {DEFAULT_MAX_RANGE_ITERATIONS} iterations" in message
    assert "max_range_iterations" in message
    assert "1:4: at <range .n>" in message
    assert render("{{ range .n }}.{{ end }}", {"n": DEFAULT_MAX_RANGE_ITERATIONS}) == "." * 10_000


def test_range_iterations_are_counted_over_all_ranges_of_one_render() -> None:
    nested = "{{ range .a }}{{ range $.a }}x{{ end }}{{ end }}"
    assert render(nested, {"a": [1, 2, 3]}, max_range_iterations=12) == "x" * 9  # 3 + 9
    assert "max_range_iterations" in refused(nested, {"a": [1, 2, 3]}, max_range_iterations=11)
    # Lists and maps count like numbers; each render starts with the full budget.
    template = compile_template(
        "{{ range .m }}{{ . }}{{ end }}", limits=EvaluationLimits(max_range_iterations=2)
    )
    assert template.render({"m": {"a": 1, "b": 2}}) == "12"
    assert template.render({"m": {"a": 1, "b": 2}}) == "12"
    with pytest.raises(TemplateError, match="max_range_iterations"):
        template.render({"m": {"a": 1, "b": 2, "c": 3}})


def test_a_range_left_with_break_stops_counting() -> None:
    text = "{{ range .n }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}"
    assert render(text, {"n": 10**9}, max_range_iterations=3) == "01"


# --- output bytes --------------------------------------------------------------------------------


def test_output_over_the_limit_is_refused_by_default() -> None:
    text = "{{ range .items }}{{ $.pad }}{{ end }}"
    data = {"items": list(range(2000)), "pad": "x" * 1000}  # 2 MB from 2000 iterations
    message = refused(text, data)
    assert f"exceeds the limit of {DEFAULT_MAX_TEMPLATE_OUTPUT_BYTES} bytes" in message
    assert "max_template_output_bytes" in message


def test_output_counts_utf8_bytes() -> None:
    assert render("{{ .s }}", {"s": "ü" * 5}, max_template_output_bytes=10) == "ü" * 5
    message = refused("{{ .s }}", {"s": "ü" * 6}, max_template_output_bytes=10)
    assert "output of 12 bytes exceeds the limit of 10 bytes" in message


def test_a_function_result_over_the_limit_is_refused_even_when_not_printed() -> None:
    text = '{{ if printf "%s%s%s%s" .s .s .s .s }}ok{{ end }}'
    assert render(text, {"s": "abcd"}, max_template_output_bytes=16) == "ok"
    message = refused(text, {"s": "abcde"}, max_template_output_bytes=16)
    assert "error calling printf: result of 20 bytes exceeds the limit of 16 bytes" in message
    assert "max_template_output_bytes" in refused(
        "{{ toJson .l }}", {"l": [1] * 10}, max_template_output_bytes=16
    )


def test_doubling_a_variable_in_a_range_is_stopped() -> None:
    # Unbounded, this grows exponentially with the caller's n.
    text = '{{ $s := "ab" }}{{ range .n }}{{ $s = printf "%s%s" $s $s }}{{ end }}{{ len $s }}'
    assert render(text, {"n": 2}, max_template_output_bytes=16) == "8"  # 4 + 8 returned
    message = refused(text, {"n": 3}, max_template_output_bytes=16)
    assert "template functions returned more than 16 bytes in one render" in message


# --- printf width and precision ------------------------------------------------------------------


def test_a_huge_printf_width_from_data_is_refused_by_default() -> None:
    # The issue's {{ printf "%*d" .w 1 }} with w = 3e8 built 840 MB.
    message = refused('{{ printf "%*d" .w 1 }}', {"w": 300_000_000})
    assert f"width 300000000 exceeds the limit of {DEFAULT_MAX_PRINTF_WIDTH} (max_printf_width)" in message
    assert render('{{ printf "%*d" .w 1 }}', {"w": DEFAULT_MAX_PRINTF_WIDTH}) == " " * 999 + "1"


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('{{ printf "%*d" .w 1 }}', "width 6"),
        ('{{ printf "%-*d" .w 1 }}', "width 6"),
        ('{{ printf "%.*f" .w 1.5 }}', "precision 6"),
        ('{{ printf "%6d" 1 }}', "width 6"),
        ('{{ printf "%.6s" "abc" }}', "precision 6"),
        ('{{ printf "%99999999999999999999999999d" 1 }}', "width 99999"),
    ],
)
def test_printf_widths_and_precisions_over_the_limit(text: str, what: str) -> None:
    message = refused(text, {"w": 6}, max_printf_width=5)
    assert what in message and "exceeds the limit of 5 (max_printf_width)" in message


def test_a_negative_star_width_counts_by_its_size() -> None:
    assert render('{{ printf "%*d|" .w 1 }}', {"w": -5}, max_printf_width=5) == "1    |"
    assert "width 6 exceeds" in refused('{{ printf "%*d" .w 1 }}', {"w": -6}, max_printf_width=5)


def test_printf_within_the_limit_is_unchanged() -> None:
    assert (
        render('{{ printf "%5.2f|%-5s|%05d" 3.14159 "ab" 42 }}', {}, max_printf_width=5)
        == " 3.14|ab   |00042"
    )


# --- abandoned steps -----------------------------------------------------------------------------


def test_a_range_stops_when_the_step_is_abandoned() -> None:
    template = compile_template(
        "{{ range .n }}{{ end }}", limits=EvaluationLimits(max_range_iterations=10**9)
    )
    with step_deadline(None) as deadline:
        deadline.abandoned = True
        with pytest.raises(TimeoutError):
            template.render({"n": 10**9})
    with step_deadline(0.0):  # a deadline already passed
        with pytest.raises(TimeoutError):
            template.render({"n": 10**9})


def test_in_a_range_the_text_functions_return_counts_in_all() -> None:
    # Work a range multiplies: each printf returns little, but all of them together a lot.
    text = '{{ range .n }}{{ if gt (len (printf "%v" $.big)) 0 }}{{ end }}{{ end }}done'
    data = {"n": 5, "big": "x" * 10}
    assert render(text, data, max_template_output_bytes=50) == "done"
    message = refused(text, {**data, "n": 6}, max_template_output_bytes=50)
    assert "template functions returned more than 50 bytes in one render" in message
