"""What an agent is shown of a step and of a node: plain JSON, plus a short text an
agent (or a person reading its transcript) can follow without parsing it."""

from __future__ import annotations

from typing import Any

from trellis.domain import ActionType, InputRequest, Node, StepResult, ToolCall


def step_view(result: StepResult) -> dict[str, Any]:
    """The step as the MCP tools return it (structured content)."""
    state = result.state
    messages: list[str] = []
    request: InputRequest | None = None
    call: ToolCall | None = None
    for action in result.render.actions:
        if action.type in (ActionType.RENDER_CONTENT, ActionType.SYSTEM_MESSAGE):
            messages.append(str(action.payload))
        elif action.type is ActionType.REQUEST_INPUT:
            assert isinstance(action.payload, InputRequest)
            request = action.payload
        elif action.type is ActionType.CALL_TOOL:
            assert isinstance(action.payload, ToolCall)
            call = action.payload
    return {
        "session_id": state.session_id,
        "node": state.current_node_id,
        "status": str(state.status),
        "finished": result.terminal,
        "messages": messages,
        "input": None
        if request is None
        else {
            "type": request.type,
            "options": list(request.options),
            "default": request.default,
            "timeout_seconds": request.timeout,
        },
        "tool_call": None
        if call is None
        else {"id": call.id, "name": call.name, "args": dict(call.args or {})},
        "context": dict(state.context),
        "revision": state.revision,
    }


def step_text(view: dict[str, Any]) -> str:
    """The step in a few lines: what the flow said, then what it waits for."""
    lines = list(view["messages"])
    request = view["input"]
    if view["finished"]:
        lines.append(f"[session {view['session_id']!r} has finished at node {view['node']!r}]")
    elif view["tool_call"] is not None:
        call = view["tool_call"]
        lines.append(f"[waiting for the result of tool {call['name']!r} (call {call['id']!r})]")
    elif request is not None:
        wanted = request["type"]
        if request["options"]:
            wanted += ": one of " + ", ".join(request["options"])
        if request["default"]:
            wanted += f"; default {request['default']!r}"
        lines.append(f"[node {view['node']!r} waits for input ({wanted}); answer with the answer tool]")
    else:
        lines.append(f"[node {view['node']!r}, status {view['status']}]")
    return "\n".join(lines)


def node_view(node: Node) -> dict[str, Any]:
    """A node's definition as an agent needs it to plan a walk (not its source file)."""
    return {
        "id": node.id,
        "type": node.type,
        "content": node.content,
        "wait": node.wait,
        "input_type": node.input_type,
        "input_options": list(node.input_options),
        "input_default": node.input_default,
        "save_to": node.save_to,
        "required_context": list(node.required_context),
        "transitions": [{"to": t.to_node_id, "condition": t.condition} for t in node.transitions],
        "on_signal": dict(node.on_signal),
        "timeout": node.timeout,
        "tool": node.do.name if node.do is not None else "",
    }
