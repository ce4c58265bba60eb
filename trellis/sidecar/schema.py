"""A small JSON Schema check of a tool's arguments, and schemas made from signatures.

The subset sidecar tools need: ``type`` (one or a list), ``properties``,
``required``, ``additionalProperties: false``, ``items``, ``enum``, ``minimum``,
``maximum``, ``minLength``, ``maxLength``. Other keywords are ignored (a schema
stays a description for LLM hosts first). Nesting deeper than MAX_DEPTH is refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, get_type_hints

from trellis.domain import JSONValue

MAX_DEPTH = 32
MAX_PROBLEMS = 10

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}

_PYTHON_TYPES: dict[Any, str] = {
    str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"
}


def problems(value: JSONValue, schema: Mapping[str, Any], where: str = "args") -> list[str]:
    """What is wrong with ``value`` under ``schema`` (empty: nothing), each naming where."""
    found: list[str] = []
    _check(value, schema, where, found, 0)
    return found[:MAX_PROBLEMS]


def _check(value: Any, schema: Mapping[str, Any], where: str, found: list[str], depth: int) -> None:
    if len(found) >= MAX_PROBLEMS or not isinstance(schema, Mapping):
        return
    if depth > MAX_DEPTH:
        found.append(f"{where}: nested deeper than {MAX_DEPTH} levels")
        return
    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_TYPES.get(name, lambda v: True)(value) for name in names):
            found.append(f"{where}: expected {' or '.join(map(str, names))}, got {_type_name(value)}")
            return
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        found.append(f"{where}: {value!r} is not one of {schema['enum']!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(schema.get("minimum"), int | float) and value < schema["minimum"]:
            found.append(f"{where}: {value} is less than the minimum {schema['minimum']}")
        if isinstance(schema.get("maximum"), int | float) and value > schema["maximum"]:
            found.append(f"{where}: {value} is more than the maximum {schema['maximum']}")
    if isinstance(value, str):
        if isinstance(schema.get("minLength"), int) and len(value) < schema["minLength"]:
            found.append(f"{where}: shorter than {schema['minLength']} characters")
        if isinstance(schema.get("maxLength"), int) and len(value) > schema["maxLength"]:
            found.append(f"{where}: longer than {schema['maxLength']} characters")
    if isinstance(value, dict):
        declared = schema.get("properties")
        properties: Mapping[str, Any] = declared if isinstance(declared, Mapping) else {}
        for name in schema.get("required", ()) if isinstance(schema.get("required"), list) else ():
            if name not in value:
                found.append(f"{where}.{name}: required")
        for name, item in value.items():
            if name in properties:
                _check(item, properties[name], f"{where}.{name}", found, depth + 1)
            elif schema.get("additionalProperties") is False:
                found.append(f"{where}.{name}: unknown argument (known: {', '.join(sorted(properties))})")
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{index}]", found, depth + 1)


def _type_name(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return type(value).__name__


def schema_of(function: Callable[..., Any], skip: frozenset[str] = frozenset()) -> dict[str, JSONValue]:
    """A JSON Schema of ``function``'s keyword arguments from its annotations: parameters
    without a default are required; unknown arguments are refused unless it takes ``**``."""
    try:
        hints = get_type_hints(function)
    except Exception:
        hints = {}
    properties: dict[str, JSONValue] = {}
    required: list[JSONValue] = []
    open_ended = False
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            open_ended = True  # **kwargs: any other argument is welcome
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        kind = _PYTHON_TYPES.get(hints.get(name))
        properties[name] = {"type": kind} if kind else {}
        if parameter.default is parameter.empty:
            required.append(name)
    schema: dict[str, JSONValue] = {"type": "object", "properties": properties}
    if not open_ended:
        schema["additionalProperties"] = False
    if required:
        schema["required"] = required
    return schema
