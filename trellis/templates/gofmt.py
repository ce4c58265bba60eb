"""Go ``fmt`` for the template functions ``print``, ``println`` and ``printf``.

Verbs: %v %s %d %q %t %f %F %e %E %g %G %x %X %o %b %c %U %T %%, flags ``-+# 0``,
width and precision (also ``*``). Like Go, a mismatched verb never raises: it prints
``%!d(string=abc)``, a missing argument ``%!d(MISSING)`` and extra ones
``%!(EXTRA int=1)``.

Deliberate leniency (Python keeps JSON integers as ``int`` where Go had float64):
the float verbs accept ints, and ``%d`` accepts a float with an integral value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from trellis.evaluation_limits import DEFAULT_MAX_PRINTF_WIDTH
from trellis.templates.values import ExecFailure, data_str, go_type_name, sorted_keys

_FLAG_CHARS = "-+# 0"


def _checked(number: int, what: str, max_width: int) -> int:
    if number > max_width:
        raise ExecFailure(f"{what} {number} exceeds the limit of {max_width} (max_printf_width)")
    return number


def _digits(template: str, start: int, end: int, what: str, max_width: int) -> int:
    # A literal with more digits than the limit is over it whatever it says (and is
    # not converted: int() refuses strings of thousands of digits).
    if end - start > len(str(max_width)):
        raise ExecFailure(
            f"{what} {template[start : start + 20]}… exceeds the limit of {max_width} (max_printf_width)"
        )
    return _checked(int(template[start:end]), what, max_width)


def sprint(args: tuple[Any, ...]) -> str:
    """``fmt.Sprint``: a space between two operands when neither is a string."""
    parts: list[str] = []
    previous_is_string = False
    for position, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if position and not is_string and not previous_is_string:
            parts.append(" ")
        parts.append(data_str(arg))
        previous_is_string = is_string
    return "".join(parts)


def sprintln(args: tuple[Any, ...]) -> str:
    """``fmt.Sprintln``: operands separated by spaces, then a newline."""
    return " ".join(data_str(arg) for arg in args) + "\n"


def go_quote(text: str) -> str:
    """``strconv.Quote``: printable characters kept, others escaped Go-style."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif char in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(char)])
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


class _Spec:
    __slots__ = ("flags", "precision", "verb", "width")

    def __init__(self, flags: str, width: int | None, precision: int | None, verb: str) -> None:
        self.flags = flags
        self.width = width
        self.precision = precision
        self.verb = verb

    def pad(self, text: str, numeric: bool = False) -> str:
        if self.width is None or len(text) >= self.width:
            return text
        if "-" in self.flags:
            return text.ljust(self.width)
        if numeric and "0" in self.flags:
            sign = text[0] if text[:1] in ("+", "-", " ") else ""
            return sign + text[len(sign) :].rjust(self.width - len(sign), "0")
        return text.rjust(self.width)

    def sign(self, text: str) -> str:
        if text.startswith("-"):
            return text
        if "+" in self.flags:
            return "+" + text
        if " " in self.flags:
            return " " + text
        return text


def _bad(spec: _Spec, value: Any) -> str:
    if value is None:
        return f"%!{spec.verb}(<nil>)"
    return f"%!{spec.verb}({go_type_name(value)}={data_str(value)})"


def _format_int(spec: _Spec, value: int) -> str:
    verb = spec.verb
    if verb in "dv":
        return spec.pad(spec.sign(str(value)), numeric=True)
    if verb in "xXob":
        base = {"x": "x", "X": "X", "o": "o", "b": "b"}[verb]
        digits = format(abs(value), base)
        if "#" in spec.flags:
            digits = {"x": "0x", "X": "0X", "o": "0", "b": "0b"}[verb] + digits
        return spec.pad(spec.sign(("-" if value < 0 else "") + digits), numeric=True)
    if verb == "c":
        return spec.pad(chr(value)) if 0 <= value <= 0x10FFFF else spec.pad("\ufffd")
    if verb == "q":
        return spec.pad("'" + go_quote(chr(value) if 0 <= value <= 0x10FFFF else "\ufffd")[1:-1] + "'")
    if verb == "U":
        return spec.pad(f"U+{value:04X}")
    if verb in "eEfFgG":
        return _format_float(spec, float(value))
    return _bad(spec, value)


def _format_float(spec: _Spec, value: float) -> str:
    verb = spec.verb
    if verb == "d" and value.is_integer():
        return _format_int(spec, int(value))
    if verb not in "eEfFgGv":
        return _bad(spec, value)
    if math.isnan(value) or math.isinf(value):
        # As Go: an infinity always shows its sign ("+Inf", as {{ .x }} prints it), NaN only
        # when asked; the space flag shows a space instead of "+"; never zero-padded.
        text = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        if math.isnan(value) and ("+" in spec.flags or " " in spec.flags):
            text = ("+" if "+" in spec.flags else " ") + text
        elif value > 0 and " " in spec.flags and "+" not in spec.flags:
            text = " Inf"
        return spec.pad(text)
    if verb in "vgG" and spec.precision is None:
        text = data_str(value)  # Go's shortest %g form
        if verb == "G":
            text = text.upper()
    else:
        precision = 6 if spec.precision is None else spec.precision
        pyverb = "f" if verb == "F" else ("g" if verb == "v" else verb)
        text = format(value, f".{precision}{pyverb}")
    return spec.pad(spec.sign(text), numeric=True)


def _format_str(spec: _Spec, value: str) -> str:
    verb = spec.verb
    if spec.precision is not None and verb in "svq":
        value = value[: spec.precision]
    if verb in "sv":
        return spec.pad(value)
    if verb == "q":
        if "#" in spec.flags and "`" not in value and all(c.isprintable() for c in value):
            return spec.pad(f"`{value}`")
        return spec.pad(go_quote(value))
    if verb in "xX":
        data = value.encode()
        text = data.hex() if verb == "x" else data.hex().upper()
        if " " in spec.flags:
            text = " ".join(text[i : i + 2] for i in range(0, len(text), 2))
        return spec.pad(text)
    return _bad(spec, value)


def format_value(spec: _Spec, value: Any) -> str:
    if spec.verb == "T":
        return spec.pad(go_type_name(value))
    if value is None:
        return spec.pad("<nil>") if spec.verb == "v" else _bad(spec, value)
    if value is True or value is False:
        return spec.pad(data_str(value)) if spec.verb in "tv" else _bad(spec, value)
    if isinstance(value, int):
        return _format_int(spec, value)
    if isinstance(value, float):
        return _format_float(spec, value)
    if isinstance(value, str):
        return _format_str(spec, value)
    # Go applies the verb to each element of a collection.
    inner = _Spec(spec.flags.replace("-", ""), None, spec.precision, spec.verb)
    if isinstance(value, Mapping):
        items = " ".join(
            f"{format_value(inner, key)}:{format_value(inner, value[key])}" for key in sorted_keys(value)
        )
        return spec.pad(f"map[{items}]")
    if isinstance(value, list | tuple):
        return spec.pad("[" + " ".join(format_value(inner, item) for item in value) + "]")
    return _bad(spec, value)


def sprintf(template: str, args: tuple[Any, ...], max_width: int = DEFAULT_MAX_PRINTF_WIDTH) -> str:
    """``fmt.Sprintf`` for the verbs listed in the module docstring; a width or precision
    over ``max_width`` is an ExecFailure."""
    out: list[str] = []
    index = 0
    used = 0
    length = len(template)
    while index < length:
        percent = template.find("%", index)
        if percent < 0:
            out.append(template[index:])
            break
        out.append(template[index:percent])
        index = percent + 1
        flags = ""
        while index < length and template[index] in _FLAG_CHARS:
            flags += template[index]
            index += 1
        width: int | None = None
        precision: int | None = None
        if index < length and template[index] == "*":
            index += 1
            if used < len(args) and isinstance(args[used], int) and not isinstance(args[used], bool):
                width = args[used]
                if width < 0:
                    flags += "-"
                    width = -width
                _checked(width, "width", max_width)
            else:
                out.append("%!(BADWIDTH)")
            used += 1
        else:
            start = index
            while index < length and template[index].isdigit():
                index += 1
            width = _digits(template, start, index, "width", max_width) if index > start else None
        if index < length and template[index] == ".":
            index += 1
            if index < length and template[index] == "*":
                index += 1
                arg = args[used] if used < len(args) else None
                if isinstance(arg, int) and not isinstance(arg, bool) and arg >= 0:
                    precision = _checked(arg, "precision", max_width)
                else:
                    out.append("%!(BADPREC)")
                used += 1
            else:
                start = index
                while index < length and template[index].isdigit():
                    index += 1
                precision = _digits(template, start, index, "precision", max_width) if index > start else 0
        if index >= length:
            out.append("%!(NOVERB)")
            break
        verb = template[index]
        index += 1
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(format_value(_Spec(flags, width, precision, verb), args[used]))
        used += 1
    if used < len(args):
        extra = ", ".join(
            "<nil>" if arg is None else f"{go_type_name(arg)}={data_str(arg)}" for arg in args[used:]
        )
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
