"""PII masking for any StateStore: what a session collected is masked before it is stored.

Two kinds of configurable patterns (Python regular expressions, searched, not
anchored):

* ``keys``: the value of every context key whose name matches is stored as
  ``"***"``, at any depth (inside mappings and lists), in ``context`` and in
  ``system_context`` alike;
* ``values``: every part of a stored string that matches is replaced by ``"***"``
  (an e-mail address typed into a free-text answer, a card number).

A string stored under a masked key is also masked wherever else it appears in the
state's contexts: the engine keeps the last answer in ``sys.ans`` (and a tool's
output under ``tool_result``), so masking only the key ``password`` would leave the
password readable there.

Masking is lossy by design: a session that is loaded again sees ``"***"``. Load,
Delete and List pass through. The caller's state is never changed. To mask and
encrypt, put masking outside: ``masking(encrypting(store))`` masks first and seals
what is left (the other way round it would only see the sealed envelope).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from trellis.adapters.state_json import encode_document
from trellis.adapters.store_middleware import MiddlewareStepStore, MiddlewareStore
from trellis.domain import State
from trellis.errors import ConfigError
from trellis.ports.store import StateStore, StepStore

MASK = "***"
_SECTION_KEYS = frozenset({"keys", "values"})


@dataclass(frozen=True, slots=True)
class MaskingRules:
    keys: tuple[re.Pattern[str], ...] = ()
    values: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def from_config(cls, section: Any, where: str) -> MaskingRules:
        """``{keys: [PATTERN, ...], values: [PATTERN, ...]}``; a bad pattern is named."""
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: must be a mapping with 'keys' and/or 'values' (lists of patterns)")
        unknown = set(section) - _SECTION_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: keys, values)")
        rules = cls(
            keys=_patterns(section.get("keys", []), f"{where}.keys"),
            values=_patterns(section.get("values", []), f"{where}.values"),
        )
        if not rules.keys and not rules.values:
            raise ConfigError(f"{where}: no pattern given (set 'keys' and/or 'values')")
        return rules

    def masks_key(self, key: str) -> bool:
        return any(p.search(key) for p in self.keys)

    def scrub(self, text: str) -> str:
        for pattern in self.values:
            text = pattern.sub(MASK, text)
        return text


def _patterns(value: Any, where: str) -> tuple[re.Pattern[str], ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"{where}: must be a list of regular expressions")
    compiled = []
    for index, text in enumerate(value):
        if not text:
            raise ConfigError(f"{where}[{index}]: an empty pattern would match everything")
        try:
            compiled.append(re.compile(text))
        except re.error as exc:
            raise ConfigError(f"{where}[{index}]: {text!r} is not a regular expression: {exc}") from None
    return tuple(compiled)


Container = dict[str, Any] | list[Any]


def _children(node: Container) -> list[tuple[Any, Any]]:
    return list(node.items()) if isinstance(node, dict) else list(enumerate(node))


def _mask_keys(roots: list[Container], rules: MaskingRules) -> set[str]:
    """Mask, in place, the values of matching keys and the matching parts of strings;
    the strings that were masked away. Iterative: a context may nest 1,000 levels deep."""
    masked: set[str] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        for key, value in _children(node):
            if isinstance(node, dict) and rules.masks_key(key):
                if isinstance(value, str) and value and value != MASK:
                    masked.add(value)
                node[key] = MASK
            elif isinstance(value, dict | list):
                stack.append(value)
            elif isinstance(value, str) and rules.values:
                node[key] = rules.scrub(value)
    return masked


def _mask_echoes(roots: list[Container], masked: set[str]) -> None:
    """Mask, in place, every string equal to one that was masked under its key."""
    stack = list(roots)
    while stack:
        node = stack.pop()
        for key, value in _children(node):
            if isinstance(value, dict | list):
                stack.append(value)
            elif isinstance(value, str) and value in masked:
                node[key] = MASK


def mask_state(state: State, rules: MaskingRules) -> State:
    """A copy of ``state`` with its contexts masked; ``state`` is not changed."""
    masked = state.clone()
    # Fresh containers all the way down: the caller's nested values stay untouched.
    # Encoded by the value rules of every store: NaN, infinities and integers beyond
    # 64 bits are InvalidInput here, not silently null or a bare TypeError.
    copied = orjson.loads(encode_document({"context": state.context, "system_context": state.system_context}))
    masked.context = copied["context"]
    masked.system_context = copied["system_context"]
    roots: list[Container] = [masked.context, masked.system_context]
    echoes = _mask_keys(roots, rules)
    if echoes:
        _mask_echoes(roots, echoes)
    return masked


class MaskingStore(MiddlewareStore):
    """A StateStore that masks what it saves into ``inner``."""

    def __init__(self, inner: StateStore, rules: MaskingRules) -> None:
        super().__init__(inner)
        self._rules = rules

    def stored(self, session_id: str, state: State) -> State:
        return mask_state(state, self._rules)


class MaskingStepStore(MiddlewareStepStore, MaskingStore):
    """The same over a store that is its own lock service, keeping its one-round-trip step."""


def masking(inner: StateStore, rules: MaskingRules) -> MaskingStore:
    """``inner`` with PII masking, keeping its StepStore capability if it has it."""
    if isinstance(inner, StepStore):
        return MaskingStepStore(inner, rules)
    return MaskingStore(inner, rules)
