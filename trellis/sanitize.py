"""The input sanitiser hosts apply to free-text input before it reaches the engine
(docs/engine.md, "Input").

The engine itself accepts any JSON value; the CLI and the servers call
``sanitize_input`` on text typed or sent by users. It never truncates or trims:
oversized or badly encoded input is rejected, control characters vanish.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Mapping

from trellis.errors import InvalidInput

DEFAULT_INPUT_LIMIT = 4096
INPUT_LIMIT_ENV = "TRELLIS_MAX_INPUT_SIZE"
_KEPT_CONTROLS = frozenset("\n\t\r")


def input_limit_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The limit from TRELLIS_MAX_INPUT_SIZE when it is a positive integer, else the default."""
    env = os.environ if environ is None else environ
    raw = env.get(INPUT_LIMIT_ENV, "").strip()
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_INPUT_LIMIT
    return value if value > 0 else DEFAULT_INPUT_LIMIT


def sanitize_input(text: str, limit: int = DEFAULT_INPUT_LIMIT) -> str:
    """Reject input over ``limit`` UTF-8 bytes or not valid UTF-8; drop control
    characters other than newline, tab and carriage return."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # A str holding lone surrogates is what undecodable bytes become in Python.
        raise InvalidInput("input is not valid UTF-8", field="input") from None
    if size > limit:
        raise InvalidInput(f"input exceeds maximum allowed size: size={size} limit={limit}", field="input")
    if text.isprintable():  # fast path: no control characters at all
        return text
    return "".join(ch for ch in text if ch in _KEPT_CONTROLS or unicodedata.category(ch) != "Cc")
