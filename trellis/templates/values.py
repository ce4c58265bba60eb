"""How templates see values: Go truth, Go type names, data lookup and the execution error.

Only data is reachable: keys of mappings (and, through ``index``, items of lists).
No attribute of any Python object is ever read, and nothing is ever called, so a
template cannot reach interpreter internals whatever the context holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trellis.go_values import go_str


class ExecFailure(Exception):
    """An execution error; ``where`` (``line:col: at <…>``) is filled by the innermost node."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.where = ""

    def locate(self, line_col: str, text: str) -> None:
        if not self.where:
            self.where = f"{line_col}: at <{text}>"


def go_type_name(value: Any) -> str:
    """The Go type a value would have had after decoding JSON into ``interface{}``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    return f"unsupported value ({type(value).__name__})"


def truth(value: Any) -> bool:
    """Go's template truth: false, 0, 0.0, "", nil and empty lists/maps are false."""
    if value is None:
        return False
    if value is True or value is False:
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | tuple | Mapping):
        return len(value) > 0
    return True


def is_zero(value: Any) -> bool:
    """"Zero" for ``default``/``coalesce``: empty lists and maps are NOT zero."""
    if value is None or value is False:
        return True
    if value is True:
        return False
    if isinstance(value, int | float | str):
        return not value
    return False


def lookup_key(value: Any, name: str) -> Any:
    """``.name`` on ``value``: a mapping key; missing or below nil gives None (printed ``<no value>``)."""
    if isinstance(value, Mapping):
        return value.get(name)
    if value is None:
        return None
    raise ExecFailure(f"can't evaluate field {name} in type {go_type_name(value)}")


def sorted_keys(mapping: Mapping[Any, Any]) -> list[Any]:
    """Map keys in Go's printing order (sorted; mixed key types by their text)."""
    try:
        return sorted(mapping)
    except TypeError:
        return sorted(mapping, key=str)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _check_printable(value: Any) -> None:
    if value.__class__ in _SCALARS:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_printable(key)
            _check_printable(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_printable(item)
    elif isinstance(value, str):  # a str subclass prints its text without calling into it
        return
    else:
        raise ExecFailure(
            f"cannot print a value of type {type(value).__name__}: templates print only JSON-like data"
        )


def data_str(value: Any, top_level_nil: str = "<nil>") -> str:
    """``go_str`` for data only: never calls ``__str__`` of an arbitrary object."""
    if value.__class__ is not str:
        _check_printable(value)
    return go_str(value, top_level_nil)
