"""How templates see values: Go's truth, zero values, type names, key order, and what
may be printed."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

from trellis.templates.values import ExecFailure, data_str, go_type_name, is_zero, sorted_keys, truth


@pytest.mark.parametrize(
    ("value", "true"),
    [
        (None, False), (False, False), (True, True), (0, False), (1, True), (-1, True), (0.0, False),
        (0.5, True), ("", False), ("0", True), ([], False), ([0], True), ((), False), ((0,), True),
        ({}, False), ({"a": 0}, True), (OrderedDict(), False), (object(), True),
    ],
)
def test_truth_is_gos(value: Any, true: bool) -> None:
    assert truth(value) is true


@pytest.mark.parametrize(
    ("value", "zero"),
    [
        (None, True), (False, True), (True, False), (0, True), (0.0, True), ("", True), (1, False),
        (-0.5, False), ("x", False), ([], False), ({}, False), (object(), False),
    ],
)
def test_zero_values_for_default_and_coalesce(value: Any, zero: bool) -> None:
    assert is_zero(value) is zero


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "<nil>"), (True, "bool"), (1, "int"), (1.5, "float64"), ("s", "string"),
        ({"a": 1}, "map[string]interface {}"), (OrderedDict(), "map[string]interface {}"),
        ([1], "[]interface {}"), ((1,), "[]interface {}"), ({1}, "unsupported value (set)"),
    ],
)
def test_go_type_names(value: Any, name: str) -> None:
    assert go_type_name(value) == name


def test_keys_print_sorted_and_mixed_keys_by_their_text() -> None:
    assert sorted_keys({"b": 1, "a": 2, "c": 3}) == ["a", "b", "c"]
    assert sorted_keys({2: "x", "10": "y", 1: "z"}) == [1, "10", 2]


def test_only_data_is_printed() -> None:
    class Name(str):
        def __str__(self) -> str:  # never called: the text itself is printed
            raise AssertionError("called")

    assert data_str(Name("ada")) == "ada"
    assert data_str({"k": [Name("x"), None]}) == "map[k:[x <nil>]]"
    assert data_str((1, "a")) == "[1 a]"
    for bad in ({"k": object()}, {object(): 1}, [1, [object()]]):
        with pytest.raises(ExecFailure, match="cannot print a value of type object: templates print only"):
            data_str(bad)


def test_a_failure_keeps_the_innermost_place() -> None:
    failure = ExecFailure("boom")
    failure.locate("1:5", ".inner")
    failure.locate("1:1", "outer")
    assert failure.where == "1:5: at <.inner>" and failure.message == "boom" and str(failure) == "boom"
