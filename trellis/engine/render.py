"""Render (docs/engine.md, "Rendering"): the actions of a state's current node. Pure and synchronous:
it reads a compiled node and a state and changes neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trellis.domain import Action, ActionType, RenderResult, State, Status, ToolCall
from trellis.engine.compiled import CompiledCall, CompiledNode, Renderable, fresh
from trellis.engine.context_checks import check_required, check_schema
from trellis.engine.idempotency import idempotency_key
from trellis.errors import ExecutionViolation, TemplateError, TrellisError
from trellis.ports.content import ContentConverter


def template_data(state: State) -> dict[str, Any]:
    """(docs/engine.md, "Templates") A copy of the context with ``sys`` bound to the system context."""
    data = dict(state.context)
    data["sys"] = state.system_context
    return data


def check_node(node: CompiledNode, state: State) -> None:
    """Before rendering or taking an answer: execution rule, then context contracts
    (docs/engine.md, "Rendering")."""
    if node.execution_violation:
        raise ExecutionViolation(node.id, node.execution_violation)
    if node.has_context_checks:
        check_required(node.id, node.required, state.context, state.system_context)
        if node.schema:
            check_schema(node.id, node.schema, state.context, state.system_context)


def _interpolate(template: Renderable, data: Mapping[str, Any], node_id: str) -> str:
    try:
        return template.render(data)
    except TemplateError as exc:
        raise TemplateError(
            f"rendering failed during interpolation: node '{node_id}': {exc.message}"
        ) from exc


def interpolate_args(
    call: CompiledCall, data: Mapping[str, Any] | None, node_id: str
) -> dict[str, Any] | None:
    """(docs/engine.md, "Templates") Top-level string arguments containing ``{{`` are rendered (always to
    strings)."""
    if call.args is None:
        return None
    args = {k: fresh(v) for k, v in call.args.items()} if call.args_nested else dict(call.args)
    if call.arg_templates:
        assert data is not None
        for key, template in call.arg_templates:
            try:
                args[key] = template.render(data)
            except TemplateError as exc:
                raise TemplateError(
                    f"rendering failed during interpolation: node '{node_id}': "
                    f"failed to interpolate tool arg '{key}': {exc.message}"
                ) from exc
    return args


def build_call(
    node: CompiledNode, call: CompiledCall, state: State, data: Mapping[str, Any] | None
) -> ToolCall:
    """The CALL_TOOL payload: metadata merged, idempotency key (docs/engine.md, "Tools and sagas") filled,
    args interpolated."""
    key = idempotency_key(state.session_id, node.id, len(state.history), call.name)
    metadata = dict(call.metadata)
    metadata["idempotency_key"] = key
    return ToolCall(
        id=call.id,
        name=call.name,
        args=interpolate_args(call, data, node.id),
        metadata=metadata,
        idempotency_key=key,
    )


def _content(
    node: CompiledNode, state: State, data: dict[str, Any] | None
) -> tuple[str | None, dict[str, Any] | None]:
    """The raw-then-interpolated content, or None when the node emits none
    (docs/engine.md, "Rendering"; format nodes: "Templates")."""
    if node.is_format:
        found = node.format_items(state.locale)
        if found is not None:
            # Fix #5 (docs/engine-differences.md): conditions see the context (input is None), and a format
            # node with an empty body still renders its messages.
            locale_key, items = found
            context, system = state.context, state.system_context
            included = tuple(
                index
                for index, (_, condition) in enumerate(items)
                if condition is None or condition.evaluate(None, context, system)
            )
            template = node.format_template(locale_key, included)
            if template.is_constant:
                return _interpolate(template, {}, node.id), data
            data = data if data is not None else template_data(state)
            return _interpolate(template, data, node.id), data
    if not node.content_always:
        return None, data
    if node.content_constant is not None:
        return node.content_constant, data
    data = data if data is not None else template_data(state)
    return _interpolate(node.content, data, node.id), data


def render_node(
    node: CompiledNode,
    state: State,
    converter: ContentConverter | None = None,
    signals: tuple[str, ...] = (),
) -> RenderResult:
    """Actions in the fixed order RENDER_CONTENT, REQUEST_INPUT, CALL_TOOL; ``signals``
    (what the node accepts, Engine._signals) are passed through to the result."""
    check_node(node, state)
    actions: list[Action] = []
    text, data = _content(node, state, None)
    if text is not None:
        if converter is not None:
            try:
                text = converter.convert(text)
            except Exception as exc:
                raise TrellisError(f"content conversion failed in node '{node.id}': {exc}") from exc
        actions.append(Action(ActionType.RENDER_CONTENT, text, node.id))
    if node.input_action is not None:
        actions.append(node.input_action)
    rolling_back = state.status is Status.ROLLING_BACK
    call = node.undo if rolling_back else node.do
    if call is not None:
        if call.arg_templates and data is None:
            data = template_data(state)
        actions.append(Action(ActionType.CALL_TOOL, build_call(node, call, state, data), node.id))
    elif node.tool_missing and not rolling_back:
        raise ExecutionViolation(node.id, f"node {node.id} is type 'tool' but missing tool_call definition")
    return RenderResult(tuple(actions), node.terminal, signals)
