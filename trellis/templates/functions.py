"""The functions a template may call (docs/engine.md, "Templates"): Go's built-ins and trellis's own.

Choices where Go's rules do not carry over to Python data (documented behaviour):

* ``bool`` is never a number: ``eq true 1`` is false, ``lt true 1`` is an error.
* ints and floats compare numerically (``eq 1 1.0`` is true; Go would refuse).
* ``eq`` of two values of different basic kinds is false rather than an error;
  ``nil`` equals only ``nil``; lists and maps cannot be compared (error, as in Go).
* ``lt``/``le``/``gt``/``ge`` need two numbers or two strings; anything else is an error.
* ``len`` of a string counts UTF-8 bytes, as Go does.
* ``index`` of a map with a missing key gives nil (prints ``<no value>``).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from trellis.templates.escape import html_escape
from trellis.templates.gofmt import sprint, sprintf, sprintln
from trellis.templates.values import ExecFailure, go_type_name, is_zero, truth

Function = Callable[..., Any]

# --- comparison ----------------------------------------------------------------------------

def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if value is True or value is False:
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _equal(left: Any, right: Any) -> bool:
    left_kind, right_kind = _kind(left), _kind(right)
    if left_kind == "other" or right_kind == "other":
        if left is None or right is None:
            return False
        raise ExecFailure(
            f"non-comparable types {go_type_name(left)} and {go_type_name(right)}"
        )
    if left_kind != right_kind:
        return False
    return bool(left == right)


def eq(first: Any, *others: Any) -> bool:
    """``eq a b c`` is ``a == b || a == c``."""
    return any(_equal(first, other) for other in others)


def ne(left: Any, right: Any) -> bool:
    return not _equal(left, right)


def _less(left: Any, right: Any) -> bool:
    left_kind, right_kind = _kind(left), _kind(right)
    for value, kind in ((left, left_kind), (right, right_kind)):
        if kind not in ("number", "string"):
            raise ExecFailure(f"invalid type for comparison: {go_type_name(value)}")
    if left_kind != right_kind:
        raise ExecFailure(
            f"incompatible types for comparison: {go_type_name(left)} and {go_type_name(right)}"
        )
    return bool(left < right)


def lt(left: Any, right: Any) -> bool:
    return _less(left, right)


def le(left: Any, right: Any) -> bool:
    return _less(left, right) or _equal(left, right)


def gt(left: Any, right: Any) -> bool:
    return not (_less(left, right) or _equal(left, right))


def ge(left: Any, right: Any) -> bool:
    return not _less(left, right)


# --- logic ---------------------------------------------------------------------------------
# The evaluator short-circuits ``and``/``or`` itself; these eager forms define the result.


def and_(*args: Any) -> Any:
    """The first false argument, or the last one."""
    for arg in args[:-1]:
        if not truth(arg):
            return arg
    return args[-1]


def or_(*args: Any) -> Any:
    """The first true argument, or the last one."""
    for arg in args[:-1]:
        if truth(arg):
            return arg
    return args[-1]


def not_(value: Any) -> bool:
    return not truth(value)


# --- data ----------------------------------------------------------------------------------


def length(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list | tuple | Mapping):
        return len(value)
    if value is None:
        raise ExecFailure("len of nil")
    raise ExecFailure(f"len of type {go_type_name(value)}")


def index(value: Any, *keys: Any) -> Any:
    """``index x 1 2`` is ``x[1][2]``: list positions and mapping keys only."""
    for key in keys:
        if isinstance(value, Mapping):
            try:
                value = value.get(key)
            except TypeError:
                raise ExecFailure(f"cannot index map with key of type {go_type_name(key)}") from None
        elif isinstance(value, list | tuple | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise ExecFailure(f"cannot index slice/array with type {go_type_name(key)}")
            items: Any = value.encode() if isinstance(value, str) else value
            if not 0 <= key < len(items):
                raise ExecFailure(f"index out of range: {key}")
            value = items[key]
        elif value is None:
            raise ExecFailure("index of untyped nil")
        else:
            raise ExecFailure(f"can't index item of type {go_type_name(value)}")
    return value


# --- trellis functions ---------------------------------------------------------------------


def default(fallback: Any, value: Any) -> Any:
    """``default FALLBACK VALUE``: VALUE unless it is zero (nil, "", 0, 0.0, false)."""
    return fallback if is_zero(value) else value


def coalesce(*values: Any) -> Any:
    """The first non-zero argument, else nil."""
    for value in values:
        if not is_zero(value):
            return value
    return None


def _json_fallback(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"unsupported type: {go_type_name(value)}")


def to_json(value: Any) -> str:
    """Compact JSON with sorted keys; ``<``, ``>``, ``&`` (and U+2028/9) escaped like Go.

    Floats keep Python's form (``2.0`` stays ``2.0``) so the output parses back to
    the same types; NaN and infinities are errors, as in Go.
    """
    try:
        text = json.dumps(
            value,
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
            allow_nan=False,
            default=_json_fallback,
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise ExecFailure(f"json: {exc}") from None
    if any(char in text for char in "<>&\u2028\u2029"):
        text = (
            text.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
        )
    return text


# --- printing ------------------------------------------------------------------------------


def print_(*args: Any) -> str:
    return sprint(args)


def println(*args: Any) -> str:
    return sprintln(args)


def printf(template: Any, *args: Any) -> str:
    if not isinstance(template, str):
        raise ExecFailure(f"printf format must be a string, not {go_type_name(template)}")
    return sprintf(template, args)


def limited_printf(max_width: int) -> Function:
    """``printf`` refusing a width or precision over ``max_width`` (which a caller could
    otherwise pass through ``%*d`` to make one call build gigabytes)."""

    def printf_limited(template: Any, *args: Any) -> str:
        if not isinstance(template, str):
            raise ExecFailure(f"printf format must be a string, not {go_type_name(template)}")
        return sprintf(template, args, max_width)

    return printf_limited


def html(*args: Any) -> str:
    return html_escape(sprint(args))


def urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(sprint(args))


# name → (implementation, minimum arguments, maximum arguments or None)
FUNCTIONS: dict[str, tuple[Function, int, int | None]] = {
    "eq": (eq, 2, None),
    "ne": (ne, 2, 2),
    "lt": (lt, 2, 2),
    "le": (le, 2, 2),
    "gt": (gt, 2, 2),
    "ge": (ge, 2, 2),
    "and": (and_, 1, None),
    "or": (or_, 1, None),
    "not": (not_, 1, 1),
    "len": (length, 1, 1),
    "index": (index, 1, None),
    "print": (print_, 0, None),
    "println": (println, 0, None),
    "printf": (printf, 1, None),
    "html": (html, 0, None),
    "urlquery": (urlquery, 0, None),
    "default": (default, 2, 2),
    "coalesce": (coalesce, 0, None),
    "toJson": (to_json, 1, 1),
}

ARITIES = {name: (low, high) for name, (_, low, high) in FUNCTIONS.items()}
