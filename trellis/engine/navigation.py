"""The pure decisions of Navigate (docs/engine.md, "Input", "Transitions", "Tools and
sagas"): no loading, no hooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trellis.engine.compiled import CompiledNode
from trellis.errors import InvalidConfirmation
from trellis.go_values import go_str

_YES = frozenset({"y", "yes", "true", "1"})
_NO = frozenset({"n", "no", "false", "0"})
_REFUSALS = frozenset({"n", "no", "false", "deny"})


def _is_empty(value: Any) -> bool:
    return value is None or (type(value) is str and value == "")


def effective_input(node: CompiledNode, raw: Any) -> Any:
    """(docs/engine.md, "Input") Defaults for empty input; confirm inputs normalised to ``"yes"``/``"no"``."""
    if node.is_confirm:
        value = (node.input_default or "yes") if _is_empty(raw) else raw
        text = go_str(value).strip().lower()
        if text in _YES:
            return "yes"
        if text in _NO:
            return "no"
        raise InvalidConfirmation(go_str(value), node.id)
    if node.input_default and _is_empty(raw):
        return node.input_default
    return raw


def is_refusal(value: Any) -> bool:
    """(docs/engine.md, "Transitions") ``false`` or n/no/false/deny (trimmed, any case); ``0`` is not a
    refusal."""
    if value is False:
        return True
    return type(value) is str and value.strip().lower() in _REFUSALS


def next_node_id(
    node: CompiledNode, value: Any, context: Mapping[str, Any], system: Mapping[str, Any]
) -> str:
    """(docs/engine.md, "Transitions") First true condition, then refusal → on_denied, then the first
    unconditional edge."""
    for target, condition in node.conditional:
        if condition.evaluate(value, context, system):
            return target
    if node.on_denied and is_refusal(value):
        return node.on_denied
    return node.unconditional or ""


def tool_result_map(call_id: str, value: Any) -> dict[str, Any]:
    """``{"_id": id, **result}`` for mappings, else ``{"_id": id, "result": value}``
    (docs/engine.md, "Tools and sagas")."""
    if isinstance(value, Mapping):
        merged: dict[str, Any] = {"_id": call_id}
        merged.update(value)
        return merged
    return {"_id": call_id, "result": value}
