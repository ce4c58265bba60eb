"""Context contracts (docs/engine.md, "Context"): required keys and the type schema.

Schemas are parsed once, when a node is compiled; checking a state then walks
precompiled checkers only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from trellis.errors import ContextTypeValidationError, ContextValidationError

TypeCheck = Callable[[Any], bool]


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python; the schema's int is not.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


def _is_float(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


_SCALARS: dict[str, TypeCheck] = {
    "string": _is_string,
    "int": _is_int,
    "float": _is_float,
    "bool": _is_bool,
}


def parse_schema_type(type_text: str) -> TypeCheck:
    """``string``/``int``/``float``/``bool`` or ``[T]`` (list of T). Raises ValueError."""
    text = type_text.strip()
    if text.startswith("[") and text.endswith("]"):
        element = parse_schema_type(text[1:-1])

        def check_list(value: Any) -> bool:
            return isinstance(value, list | tuple) and all(element(item) for item in value)

        return check_list
    check = _SCALARS.get(text)
    if check is None:
        raise ValueError(f"unsupported type {type_text!r}")
    return check


def describe(value: Any) -> str:
    """The JSON-ish kind of a value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def check_required(
    node_id: str,
    required: tuple[str, ...],
    context: Mapping[str, Any],
    system_context: Mapping[str, Any],
) -> None:
    """``required_context``: presence in context or system context (null counts as present)."""
    missing = [key for key in required if key not in context and key not in system_context]
    if missing:
        raise ContextValidationError(node_id, missing)


def check_schema(
    node_id: str,
    schema: tuple[tuple[str, str, TypeCheck], ...],
    context: Mapping[str, Any],
    system_context: Mapping[str, Any],
) -> None:
    """``context_schema``: every schema key present (context first, then system context) with
    the right type."""
    errors: list[str] = []
    for key, type_text, check in schema:
        if key in context:
            value = context[key]
        elif key in system_context:
            value = system_context[key]
        else:
            errors.append(f'field "{key}": required')
            continue
        if not check(value):
            errors.append(f'field "{key}": expected {type_text}, got {describe(value)}')
    if errors:
        raise ContextTypeValidationError(node_id, errors)
