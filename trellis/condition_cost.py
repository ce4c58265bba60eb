"""How much work a CEL condition can do on given data, estimated before it runs.

The CEL library has no cost limit of its own, holds the GIL while it evaluates
and copies the accumulated list on every element of ``filter`` and ``map``
(quadratic: ``items.filter(x, x > 5)`` over 30,000 elements ran 66 s). A
condition's work is bounded by the collections it iterates: every collection a
comprehension can reach is one of the values it reads (or built from them, no
larger than them by more than the expression's own length), so with ``n`` the
largest list or map in those values, the work is at most about ``n ** degree``:

* ``degree`` adds up the comprehensions nested inside each other (the deepest
  chain), ``filter`` and ``map`` counting 2 and ``all``, ``exists``,
  ``exists_one`` counting 1; comprehensions one after the other do not multiply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_WEIGHTS = {"all": 1, "exists": 1, "exists_one": 1, "filter": 2, "map": 2}

# CEL tokens that matter here; everything else is skipped a character at a time.
# Strings (optionally bytes) in triple or single quotes; raw strings, which have no
# escapes, are found by _RAW_PREFIX first.
_TOKEN = re.compile(
    r"""
      (?P<comment>//[^\n]*)
    | (?P<string>[bB]?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
                  |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[().])
    """,
    re.VERBOSE | re.DOTALL,
)
_RAW_PREFIX = re.compile(r"[bB]?[rR][bB]?(?='|\")")


def _tokens(source: str) -> Iterable[tuple[str, str]]:
    position = 0
    length = len(source)
    while position < length:
        if source[position].isspace():
            position += 1
            continue
        raw = _RAW_PREFIX.match(source, position)
        if raw is not None:
            # A raw string: a backslash is an ordinary character, so it cannot escape the quote.
            quote_at = raw.end()
            quote = source[quote_at : quote_at + 3]
            if quote not in ("'''", '"""'):
                quote = source[quote_at]
            end = source.find(quote, quote_at + len(quote))
            position = length if end < 0 else end + len(quote)
            yield "string", ""
            continue
        match = _TOKEN.match(source, position)
        if match is None:
            position += 1
            continue
        position = match.end()
        kind = match.lastgroup or ""
        if kind != "comment":
            yield kind, match.group()


def comprehension_degree(source: str) -> int:
    """The largest sum of comprehension weights along one chain of nesting in ``source``
    (0 when it has no comprehension). ``source`` is valid CEL."""
    previous: list[str] = ["", ""]  # the two tokens before the current one
    open_weights: list[int] = []  # per open parenthesis: the weight of its comprehension
    depth = degree = 0
    for kind, text in _tokens(source):
        if text == "(":
            weight = 0
            if previous[1] == "." and previous[0] in _WEIGHTS:
                weight = _WEIGHTS[previous[0]]
            open_weights.append(weight)
            depth += weight
            degree = max(degree, depth)
        elif text == ")" and open_weights:
            depth -= open_weights.pop()
        previous = [text if kind != "string" else "", previous[0]]
    return degree


def first_collection_over(values: Iterable[Any], limit: int) -> int:
    """The size of a list or mapping with more than ``limit`` entries anywhere in ``values``
    (nested ones included), or 0 when there is none."""
    pending = [value for value in values if isinstance(value, list | tuple | Mapping)]
    while pending:
        collection = pending.pop()
        size = len(collection)
        if size > limit:
            return size
        items = collection.values() if isinstance(collection, Mapping) else collection
        pending.extend(item for item in items if isinstance(item, list | tuple | Mapping))
    return 0


def largest_allowed(limit: int, degree: int) -> int:
    """The largest ``n`` with ``n ** degree <= limit``."""
    n: int = round(limit ** (1.0 / degree))
    while n > 0 and n**degree > limit:
        n -= 1
    while (n + 1) ** degree <= limit:
        n += 1
    return n
