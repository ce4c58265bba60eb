"""Templates reach data only: mapping keys and list items, never Python attributes or calls."""

from __future__ import annotations

from typing import Any

import pytest

from trellis.errors import TemplateError
from trellis.templates import compile_template


class Secretive:
    """An object whose attributes and string form must never reach the output."""

    secret = "attribute-value"

    def __str__(self) -> str:
        raise AssertionError("a template called __str__")

    def method(self) -> str:
        raise AssertionError("a template called a method")


def render(text: str, data: dict[str, Any]) -> str:
    return compile_template(text).render(data)


@pytest.mark.parametrize("field", ["__class__", "__dict__", "keys", "items", "get", "__len__"])
def test_dunder_and_method_names_on_a_mapping_are_just_missing_keys(field: str) -> None:
    assert render(f"{{{{ .{field} }}}}", {"a": 1}) == "<no value>"
    assert render(f"{{{{ .d.{field} }}}}", {"d": {"a": 1}}) == "<no value>"


def test_a_key_named_like_an_attribute_is_returned_as_data() -> None:
    assert render("{{ .__class__ }}", {"__class__": "data"}) == "data"


@pytest.mark.parametrize("field", ["__class__", "upper", "__len__"])
def test_fields_on_a_string_are_errors_that_leak_nothing(field: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(f"{{{{ .s.{field} }}}}", {"s": "text"})
    message = str(caught.value)
    assert f"can't evaluate field {field} in type string" in message
    assert "<class" not in message and "built-in" not in message


def test_objects_are_neither_inspected_nor_called() -> None:
    data = {"o": Secretive()}
    for text in ("{{ .o.secret }}", "{{ .o.method }}", "{{ .o }}", "{{ print .o }}", '{{ printf "%v" .o }}'):
        with pytest.raises(TemplateError) as caught:
            render(text, data)
        assert "attribute-value" not in str(caught.value)
    with pytest.raises(TemplateError, match="only JSON-like data"):
        render("{{ .l }}", {"l": [1, Secretive()]})


def test_index_does_not_reach_attributes() -> None:
    with pytest.raises(TemplateError, match="can't index item of type"):
        render('{{ index .o "secret" }}', {"o": Secretive()})
