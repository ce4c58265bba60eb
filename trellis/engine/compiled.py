"""CompiledNode: everything the engine needs from a node, worked out once.

A node is compiled the first time the engine needs it and then reused until the
graph changes, so rendering and navigating parse nothing: templates, conditions,
the context schema, the input request and the tool calls are all ready.

What fails at compile time (the node is then unusable, like an unparseable file
in the original): an invalid CEL condition (ConditionError) and an unsupported
context-schema type (NodeDefinitionError). Template syntax errors are kept and
raised when the template is first *used*, because the original only parsed
templates while rendering: a node with a broken body can still be entered.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from trellis.conditions import Condition, compile_condition
from trellis.domain import SYS_NAMESPACE, Action, ActionType, FormatItem, InputRequest, Node, ToolCall
from trellis.engine.context_checks import TypeCheck, parse_schema_type
from trellis.errors import NodeDefinitionError, TemplateError
from trellis.evaluation_limits import DEFAULT_LIMITS, EvaluationLimits
from trellis.go_values import parse_duration
from trellis.templates import compile_template

_ROLLBACK = "rollback"
_FORMAT_CACHE_LIMIT = 256
# A {{range}} action: the one construct whose work grows with the data it is given.
_RANGE_ACTION = re.compile(r"\{\{-?\s*range\b")


def iterates(texts: Iterable[str]) -> bool:
    """Does any of these templates loop over data (so that rendering it is worth moving
    off the event loop)?"""
    return any(_RANGE_ACTION.search(text) for text in texts)


class Renderable(Protocol):
    """What the engine needs of a compiled template."""

    @property
    def is_constant(self) -> bool: ...

    def render(self, data: Mapping[str, Any]) -> str: ...


class _BrokenTemplate:
    """A template that failed to parse: raises its error when used (see module doc)."""

    __slots__ = ("_error",)

    def __init__(self, error: TemplateError) -> None:
        self._error = error

    @property
    def is_constant(self) -> bool:
        return False

    def render(self, data: Mapping[str, Any]) -> str:
        raise self._error


def _template(text: str, *, html: bool, name: str, limits: EvaluationLimits) -> Renderable:
    try:
        compiled: Renderable = compile_template(text, html=html, name=name, limits=limits)
    except TemplateError as exc:
        return _BrokenTemplate(exc)
    return compiled


def _constant_text(template: Renderable) -> str | None:
    """The output of a template that uses no data, so rendering it costs nothing."""
    if not template.is_constant:
        return None
    try:
        return template.render({})
    except TemplateError:
        return None


def is_rollback(target: str) -> bool:
    """``rollback`` as a navigation target, in any letter case (docs/engine-differences.md, fix #7)."""
    return len(target) == len(_ROLLBACK) and target.lower() == _ROLLBACK


def fresh(value: Any) -> Any:
    """A private copy of a JSON container (scalars are immutable and returned as is)."""
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


class CompiledCall:
    """A do/undo call ready to emit: ID defaulted to the name (docs/engine-differences.md,
    fix #10), metadata merged with the node's, argument templates compiled (top level only,
    docs/engine.md, "Templates")."""

    __slots__ = ("arg_templates", "args", "args_nested", "id", "iterates", "metadata", "name")

    def __init__(
        self, call: ToolCall, node: Node, *, html: bool, field: str, limits: EvaluationLimits
    ) -> None:
        self.id = call.id or call.name
        self.name = call.name
        self.args: Mapping[str, Any] | None = call.args
        # Nested containers in args are copied per emitted call (see fresh()).
        self.args_nested = any(isinstance(v, dict | list) for v in (call.args or {}).values())
        merged: dict[str, str] = dict(call.metadata or {})
        merged.update(node.metadata)
        self.metadata: Mapping[str, str] = merged
        where = node.source or node.id
        self.arg_templates: tuple[tuple[str, Renderable], ...] = tuple(
            (key, _template(value, html=html, name=f"{where}:{field}.args.{key}", limits=limits))
            for key, value in (call.args or {}).items()
            if isinstance(value, str) and "{{" in value
        )
        self.iterates = iterates(v for v in (call.args or {}).values() if isinstance(v, str))


class CompiledNode:
    """One node, compiled. Treat as immutable (the only mutable part is a private
    memo of format-node templates, which never changes what a render produces)."""

    __slots__ = (
        "_format_memo",
        "conditional",
        "content",
        "content_always",
        "content_constant",
        "default_context",
        "do",
        "execution_violation",
        "has_context_checks",
        "has_transitions",
        "html",
        "id",
        "input_action",
        "input_default",
        "input_request",
        "is_confirm",
        "is_format",
        "iterates",
        "limits",
        "messages",
        "node",
        "on_denied",
        "on_error",
        "on_signal",
        "on_signal_default",
        "required",
        "save_to",
        "save_to_reserved",
        "schema",
        "terminal",
        "timeout",
        "tool_missing",
        "type",
        "unconditional",
        "undo",
    )

    def __init__(
        self,
        node: Node,
        *,
        html: bool = False,
        logger: logging.Logger | None = None,
        limits: EvaluationLimits = DEFAULT_LIMITS,
    ) -> None:
        log = logger or logging.getLogger("trellis.engine")
        where = node.source or node.id
        self.node = node
        self.id = node.id
        self.type = node.type
        self.html = html
        self.limits = limits

        # A node either acts or listens, never both (docs/engine.md, "Node fields").
        listens = node.wait or bool(node.input_type) or node.type == "question"
        self.execution_violation = (
            f"node {node.id} violation: cannot have both 'do' (tool) and 'wait/input' in the same node"
            if node.do is not None and listens
            else ""
        )
        self.tool_missing = node.type == "tool" and node.do is None

        # Context contracts (docs/engine.md, "Context").
        self.required = tuple(node.required_context)
        schema: list[tuple[str, str, TypeCheck]] = []
        for key, type_text in node.context_schema.items():
            try:
                schema.append((key, type_text, parse_schema_type(type_text)))
            except ValueError as exc:
                raise NodeDefinitionError(node.id, where, f"context_schema.{key}", str(exc)) from None
        self.schema = tuple(schema)
        self.has_context_checks = bool(self.required or self.schema)

        # Content (docs/engine.md, "Rendering"; format nodes: "Templates").
        self.is_format = node.type == "format"
        self.content = _template(node.content, html=html, name=f"{where}:content", limits=limits)
        self.content_always = node.type in ("text", "question") or node.content != ""
        self.content_constant = _constant_text(self.content)
        self.messages: dict[str, tuple[tuple[str, Condition | None], ...]] = {}
        for locale, items in node.messages.items():
            self.messages[locale] = tuple(
                self._format_item(item, where, locale, index, limits) for index, item in enumerate(items)
            )
        self._format_memo: dict[tuple[str, tuple[int, ...]], Renderable] = {}

        # Input request (docs/engine.md, "Rendering"; timeout parsed once; invalid → 0, logged).
        self.timeout = 0.0
        if node.timeout:
            try:
                self.timeout = max(parse_duration(node.timeout), 0.0)
            except ValueError:
                log.warning("node %s: invalid timeout %r ignored", node.id, node.timeout)
        if node.wait or node.type == "question" or node.input_type:
            self.input_request: InputRequest | None = InputRequest(
                type=node.input_type or "text",
                options=tuple(node.input_options),
                default=node.input_default,
                timeout=self.timeout,
            )
        else:
            self.input_request = None
        # Actions are immutable, so the REQUEST_INPUT action is built once.
        self.input_action = (
            Action(ActionType.REQUEST_INPUT, self.input_request, node.id)
            if self.input_request is not None
            else None
        )
        self.is_confirm = node.input_type == "confirm"
        self.input_default = node.input_default

        # Tool calls (docs/engine.md, "Tools and sagas").
        self.do: CompiledCall | None = None
        self.undo: CompiledCall | None = None
        if node.do is not None:
            self.do = CompiledCall(node.do, node, html=html, field="do", limits=limits)
        if node.undo is not None:
            self.undo = CompiledCall(node.undo, node, html=html, field="undo", limits=limits)
        # Rendering a node whose templates loop over data runs off the event loop (Engine.render).
        self.iterates = (
            iterates([node.content])
            or iterates(item.text for items in node.messages.values() for item in items)
            or any(call is not None and call.iterates for call in (self.do, self.undo))
        )

        # docs/engine.md, "Transitions": conditional ones compiled, the first unconditional one kept.
        conditional: list[tuple[str, Condition]] = []
        unconditional: str | None = None
        for index, transition in enumerate(node.transitions):
            if transition.condition:
                condition = compile_condition(
                    transition.condition, where=f"{where}: transitions[{index}].condition", limits=limits
                )
                conditional.append((transition.to_node_id, condition))
            elif unconditional is None:
                unconditional = transition.to_node_id
        self.conditional = tuple(conditional)
        self.unconditional = unconditional
        self.has_transitions = bool(node.transitions)
        self.terminal = not node.transitions and not node.on_signal and not node.timeout

        self.save_to = node.save_to
        self.save_to_reserved = node.save_to == SYS_NAMESPACE or node.save_to.startswith(SYS_NAMESPACE + ".")
        # Containers are handed out as copies so that a host changing a list in
        # its session's context cannot change the node's default for everyone.
        self.default_context: tuple[tuple[str, Any, bool], ...] = tuple(
            (key, value, isinstance(value, dict | list)) for key, value in node.default_context.items()
        )
        self.on_error = node.on_error
        self.on_denied = node.on_denied
        self.on_signal = node.on_signal
        self.on_signal_default = node.on_signal_default

    @staticmethod
    def _format_item(
        item: FormatItem, where: str, locale: str, index: int, limits: EvaluationLimits
    ) -> tuple[str, Condition | None]:
        if not item.condition:
            return item.text, None
        return item.text, compile_condition(
            item.condition, where=f"{where}: messages[{locale!r}][{index}].condition", limits=limits
        )

    def format_items(self, locale: str) -> tuple[str, tuple[tuple[str, Condition | None], ...]] | None:
        """Format nodes (docs/engine.md, "Templates"): the messages for ``locale``, then ``""``, then
        ``en``."""
        messages = self.messages
        if not messages:
            return None
        for key in (locale, "", "en"):
            items = messages.get(key)
            if items:
                return key, items
        return None

    def format_template(self, locale_key: str, included: tuple[int, ...]) -> Renderable:
        """The template for the concatenation of the included items (memoised)."""
        memo_key = (locale_key, included)
        template = self._format_memo.get(memo_key)
        if template is None:
            items = self.messages[locale_key]
            text = "".join(items[i][0] for i in included)
            name = f"{self.node.source or self.id}:messages"
            template = _template(text, html=self.html, name=name, limits=self.limits)
            if len(self._format_memo) < _FORMAT_CACHE_LIMIT:
                self._format_memo[memo_key] = template
        return template
