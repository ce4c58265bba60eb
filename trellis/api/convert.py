"""Domain objects ↔ trellis.v1 protobuf messages, for servers and remote clients alike.

Free-form values travel as JSON text (see the header of protos/trellis/v1/types.proto
for the measurements behind that choice): ``orjson`` both ways, empty text meaning
null. Anything a client sent that does not parse raises InvalidInput naming the
field, so the server answers INVALID_ARGUMENT instead of crashing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from google.protobuf import duration_pb2, timestamp_pb2

from trellis.api.v1 import dispatcher_pb2 as dpb
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import types_pb2 as pb
from trellis.dispatching import DispatchContext, RetryPolicy, ToolInfo
from trellis.domain import (
    Action,
    ActionType,
    FormatItem,
    InputRequest,
    JSONValue,
    Node,
    RenderResult,
    SessionEvent,
    State,
    StateDiff,
    Status,
    StepResult,
    Tool,
    ToolCall,
    ToolResult,
    Transition,
)
from trellis.errors import InvalidInput
from trellis.ports.loader import GraphChange
from trellis.go_values import format_duration, parse_duration

# --- JSON values ----------------------------------------------------------------------


def dump_json(value: JSONValue, field: str = "value") -> str:
    """JSON text for a value; None becomes the empty string (absent)."""
    if value is None:
        return ""
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InvalidInput(f"{field}: value cannot be encoded as JSON: {exc}", field=field) from None


def load_json(text: str, field: str) -> JSONValue:
    """The value of a ``*_json`` field; empty text is None."""
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{field}: invalid JSON: {exc}", field=field) from None


def load_json_object(text: str, field: str) -> dict[str, JSONValue]:
    """The value of a ``*_json`` field that must hold an object; empty text is {}."""
    value = load_json(text, field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{field}: expected a JSON object, got {type(value).__name__}", field=field)
    return value


# --- durations and statuses -------------------------------------------------------------


def duration_to_proto(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    whole = int(seconds)
    out.seconds = whole
    out.nanos = round((seconds - whole) * 1e9)
    return out


def duration_from_proto(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


_STATUS_TO_PROTO = {
    Status.ACTIVE: pb.STATUS_ACTIVE,
    Status.WAITING_FOR_TOOL: pb.STATUS_WAITING_FOR_TOOL,
    Status.ROLLING_BACK: pb.STATUS_ROLLING_BACK,
    Status.TERMINATED: pb.STATUS_TERMINATED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}


def status_to_proto(status: Status) -> pb.Status.ValueType:
    return _STATUS_TO_PROTO[status]


def status_from_proto(value: pb.Status.ValueType, field: str = "status") -> Status:
    """STATUS_UNSPECIFIED reads as active (the default of a fresh state)."""
    if value == pb.STATUS_UNSPECIFIED:
        return Status.ACTIVE
    try:
        return _STATUS_FROM_PROTO[value]
    except KeyError:
        raise InvalidInput(f"{field}: unknown status value {value}", field=field) from None


# --- tools ------------------------------------------------------------------------------


def tool_call_to_proto(call: ToolCall) -> pb.ToolCall:
    return pb.ToolCall(
        id=call.id,
        name=call.name,
        args_json=dump_json(dict(call.args) if call.args is not None else None, "tool call args"),
        metadata=dict(call.metadata or {}),
        idempotency_key=call.idempotency_key,
    )


def tool_call_from_proto(msg: pb.ToolCall, field: str = "tool_call") -> ToolCall:
    args = load_json(msg.args_json, f"{field}.args_json")
    if args is not None and not isinstance(args, dict):
        raise InvalidInput(
            f"{field}.args_json: expected a JSON object, got {type(args).__name__}", field=f"{field}.args_json"
        )
    return ToolCall(
        id=msg.id,
        name=msg.name,
        args=args,
        metadata=dict(msg.metadata) if msg.metadata else None,
        idempotency_key=msg.idempotency_key,
    )


def tool_result_to_proto(result: ToolResult) -> pb.ToolResult:
    return pb.ToolResult(
        id=result.id,
        result_json=dump_json(result.result, "tool result"),
        is_error=result.is_error,
        is_denied=result.is_denied,
        error=result.error,
        error_type=result.error_type,
    )


def tool_result_from_proto(msg: pb.ToolResult, field: str = "tool_result") -> ToolResult:
    return ToolResult(
        id=msg.id,
        result=load_json(msg.result_json, f"{field}.result_json"),
        is_error=msg.is_error,
        is_denied=msg.is_denied,
        error=msg.error,
        error_type=msg.error_type,
    )


def dispatch_context_to_proto(context: DispatchContext) -> dpb.DispatchContext:
    msg = dpb.DispatchContext(
        session_id=context.session_id,
        node_id=context.node_id,
        attempt=context.attempt,
        idempotency_key=context.idempotency_key,
        fencing_token=context.fencing_token,
    )
    if context.deadline is not None:
        msg.deadline.CopyFrom(_timestamp(context.deadline))
    return msg


def dispatch_context_from_proto(msg: dpb.DispatchContext) -> DispatchContext:
    return DispatchContext(
        session_id=msg.session_id,
        node_id=msg.node_id,
        attempt=msg.attempt or 1,
        deadline=msg.deadline.seconds + msg.deadline.nanos / 1e9 if msg.HasField("deadline") else None,
        idempotency_key=msg.idempotency_key,
        fencing_token=msg.fencing_token,
    )


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    whole = int(seconds)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=round((seconds - whole) * 1e9) % 1_000_000_000)


def retry_policy_to_proto(policy: RetryPolicy) -> dpb.RetryPolicy:
    msg = dpb.RetryPolicy(
        initial_interval=duration_to_proto(policy.initial_interval),
        backoff_coefficient=policy.backoff_coefficient,
        maximum_attempts=policy.maximum_attempts,
        non_retryable_error_types=sorted(policy.non_retryable_error_types),
    )
    if policy.maximum_interval is not None:
        msg.maximum_interval.CopyFrom(duration_to_proto(policy.maximum_interval))
    return msg


def retry_policy_from_proto(msg: dpb.RetryPolicy, field: str = "retry") -> RetryPolicy:
    coefficient = msg.backoff_coefficient or 2.0
    if coefficient < 1:
        raise InvalidInput(
            f"{field}.backoff_coefficient: must be at least 1, got {coefficient}",
            field=f"{field}.backoff_coefficient",
        )
    initial = duration_from_proto(msg.initial_interval) if msg.HasField("initial_interval") else 1.0
    if initial < 0:
        raise InvalidInput(f"{field}.initial_interval: must not be negative", field=f"{field}.initial_interval")
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=coefficient,
        maximum_interval=(
            duration_from_proto(msg.maximum_interval) if msg.HasField("maximum_interval") else None
        ),
        maximum_attempts=msg.maximum_attempts,
        non_retryable_error_types=frozenset(msg.non_retryable_error_types),
    )


def tool_info_to_proto(info: ToolInfo) -> dpb.ToolInfo:
    msg = dpb.ToolInfo(
        name=info.name,
        description=info.description,
        args_schema_json=dump_json(dict(info.args_schema), "args schema") if info.args_schema else "",
        idempotent=info.idempotent,
    )
    if info.timeout is not None:
        msg.timeout.CopyFrom(duration_to_proto(info.timeout))
    if info.retry is not None:
        msg.retry.CopyFrom(retry_policy_to_proto(info.retry))
    return msg


def tool_info_from_proto(msg: dpb.ToolInfo, field: str = "tool") -> ToolInfo:
    if not msg.name:
        raise InvalidInput(f"{field}.name: must not be empty", field=f"{field}.name")
    timeout = duration_from_proto(msg.timeout) if msg.HasField("timeout") else None
    if timeout is not None and timeout <= 0:
        raise InvalidInput(f"{field}.timeout: must be positive", field=f"{field}.timeout")
    return ToolInfo(
        name=msg.name,
        description=msg.description,
        args_schema=load_json_object(msg.args_schema_json, f"{field}.args_schema_json"),
        idempotent=msg.idempotent,
        timeout=timeout,
        retry=retry_policy_from_proto(msg.retry, f"{field}.retry") if msg.HasField("retry") else None,
    )


# --- nodes ------------------------------------------------------------------------------


def node_to_proto(node: Node) -> pb.Node:
    msg = pb.Node(
        id=node.id,
        type=node.type,
        wait=node.wait,
        save_to=node.save_to,
        required_context=list(node.required_context),
        default_context_json=dump_json(dict(node.default_context), f"node {node.id} default_context")
        if node.default_context
        else "",
        context_schema=dict(node.context_schema),
        content=node.content,
        metadata=dict(node.metadata),
        transitions=[pb.Transition(to_node_id=t.to_node_id, condition=t.condition) for t in node.transitions],
        on_error=node.on_error,
        on_denied=node.on_denied,
        on_signal=dict(node.on_signal),
        on_signal_default=dict(node.on_signal_default),
        input_type=node.input_type,
        input_options=list(node.input_options),
        input_default=node.input_default,
        tools=[
            pb.Tool(
                name=t.name,
                description=t.description,
                parameters_json=dump_json(dict(t.parameters), f"tool {t.name} parameters")
                if t.parameters
                else "",
            )
            for t in node.tools
        ],
        timeout_text=node.timeout,
        source=node.source,
    )
    if node.do is not None:
        msg.do_call.CopyFrom(tool_call_to_proto(node.do))
    if node.undo is not None:
        msg.undo_call.CopyFrom(tool_call_to_proto(node.undo))
    for locale, items in node.messages.items():
        msg.messages[locale].items.extend(pb.FormatItem(text=i.text, condition=i.condition) for i in items)
    if node.timeout:
        try:
            msg.timeout.CopyFrom(duration_to_proto(parse_duration(node.timeout)))
        except ValueError:
            pass  # an unparseable timeout travels as text only; the engine reports it on use
    return msg


def node_from_proto(msg: pb.Node) -> Node:
    where = f"node {msg.id}"
    timeout = msg.timeout_text
    if not timeout and msg.HasField("timeout"):
        timeout = format_duration(duration_from_proto(msg.timeout))
    return Node(
        id=msg.id,
        type=msg.type or "text",
        wait=msg.wait,
        save_to=msg.save_to,
        required_context=tuple(msg.required_context),
        default_context=load_json_object(msg.default_context_json, f"{where} default_context_json"),
        context_schema=dict(msg.context_schema),
        content=msg.content,
        metadata=dict(msg.metadata),
        transitions=tuple(Transition(t.to_node_id, t.condition) for t in msg.transitions),
        on_error=msg.on_error,
        on_denied=msg.on_denied,
        on_signal=dict(msg.on_signal),
        on_signal_default=dict(msg.on_signal_default),
        input_type=msg.input_type,
        input_options=tuple(msg.input_options),
        input_default=msg.input_default,
        do=tool_call_from_proto(msg.do_call, f"{where} do_call") if msg.HasField("do_call") else None,
        undo=tool_call_from_proto(msg.undo_call, f"{where} undo_call") if msg.HasField("undo_call") else None,
        tools=tuple(
            Tool(
                name=t.name,
                description=t.description,
                parameters=load_json_object(t.parameters_json, f"{where} tool {t.name} parameters_json"),
            )
            for t in msg.tools
        ),
        messages={
            locale: tuple(FormatItem(text=i.text, condition=i.condition) for i in items.items)
            for locale, items in msg.messages.items()
        },
        timeout=timeout,
        source=msg.source,
    )


# --- states -----------------------------------------------------------------------------


def state_to_proto(state: State) -> pb.State:
    msg = pb.State()
    fill_state(msg, state)
    return msg


def fill_state(msg: pb.State, state: State) -> None:
    """Write ``state`` into ``msg`` (fresh, or a field of a message being built): filling in
    place spares the copy a message passed to a constructor costs (once per step)."""
    msg.SetInParent()
    msg.session_id = state.session_id
    msg.current_node_id = state.current_node_id
    msg.status = _STATUS_TO_PROTO[state.status]
    msg.pending_tool_call = state.pending_tool_call
    msg.context_json = dump_json(state.context, "state.context")
    msg.system_context_json = dump_json(state.system_context, "state.system_context")
    msg.locale = state.locale
    msg.history.extend(state.history)
    msg.terminated = state.terminated
    msg.revision = state.revision


def state_from_proto(msg: pb.State, field: str = "state") -> State:
    return State(
        session_id=msg.session_id,
        current_node_id=msg.current_node_id,
        status=status_from_proto(msg.status, f"{field}.status"),
        pending_tool_call=msg.pending_tool_call,
        context=load_json_object(msg.context_json, f"{field}.context_json"),
        system_context=load_json_object(msg.system_context_json, f"{field}.system_context_json"),
        locale=msg.locale,
        history=list(msg.history),
        terminated=msg.terminated,
        revision=msg.revision,
    )


# --- actions and steps ------------------------------------------------------------------


# InputRequest.kind for the engine's input types; any other type is INPUT_KIND_OTHER.
_INPUT_KINDS = {
    "text": pb.INPUT_KIND_TEXT,
    "confirm": pb.INPUT_KIND_CONFIRM,
    "choice": pb.INPUT_KIND_CHOICE,
}
# The signal a host sends when an input's timeout elapses (a node's on_timeout is
# its on_signal["timeout"]; docs/engine.md, "Signals and timeouts").
TIMEOUT_SIGNAL = "timeout"


def fill_action(msg: pb.Action, action: Action) -> None:
    """Write ``action`` into ``msg`` in place (see fill_state)."""
    payload = action.payload
    kind = action.type
    if action.node_id:
        msg.node_id = action.node_id
    if kind is ActionType.RENDER_CONTENT:
        msg.render_content = str(payload)
    elif kind is ActionType.SYSTEM_MESSAGE:
        msg.system_message = str(payload)
    elif kind is ActionType.REQUEST_INPUT:
        assert isinstance(payload, InputRequest)
        request = msg.request_input
        request.SetInParent()
        request.type = payload.type
        if payload.options:
            request.options.extend(payload.options)
        request.default_value = payload.default
        request.kind = _INPUT_KINDS.get(payload.type, pb.INPUT_KIND_OTHER)
        # A confirm's empty answer is "yes" when it names no default (engine.navigation).
        request.has_default = bool(payload.default) or payload.type == "confirm"
        if payload.timeout:
            request.timeout.CopyFrom(duration_to_proto(payload.timeout))
            request.timeout_signal = TIMEOUT_SIGNAL
    else:
        assert isinstance(payload, ToolCall)
        msg.call_tool.CopyFrom(tool_call_to_proto(payload))


def action_from_proto(msg: pb.Action) -> Action:
    kind = msg.WhichOneof("kind")
    if kind == "render_content":
        return Action(ActionType.RENDER_CONTENT, msg.render_content, msg.node_id)
    if kind == "system_message":
        return Action(ActionType.SYSTEM_MESSAGE, msg.system_message, msg.node_id)
    if kind == "request_input":
        r = msg.request_input
        timeout = duration_from_proto(r.timeout) if r.HasField("timeout") else 0.0
        return Action(
            ActionType.REQUEST_INPUT,
            InputRequest(type=r.type, options=tuple(r.options), default=r.default_value, timeout=timeout),
            msg.node_id,
        )
    if kind == "call_tool":
        return Action(ActionType.CALL_TOOL, tool_call_from_proto(msg.call_tool, "action.call_tool"), msg.node_id)
    raise InvalidInput("action: no kind set")


def step_to_proto(step: StepResult) -> pb.Step:
    msg = pb.Step()
    fill_step(msg, step)
    return msg


def fill_step(msg: pb.Step, step: StepResult) -> None:
    """Write ``step`` into ``msg`` in place, e.g. ``fill_step(response.step, result)``."""
    fill_state(msg.state, step.state)
    actions = msg.actions
    for action in step.render.actions:
        fill_action(actions.add(), action)
    msg.terminal = step.terminal
    if step.render.signals:
        msg.signals.extend(step.render.signals)
    msg.input_rejected = step.render.input_rejected


def step_from_proto(msg: pb.Step) -> StepResult:
    render = RenderResult(
        actions=tuple(action_from_proto(a) for a in msg.actions),
        terminal=msg.terminal,
        signals=tuple(msg.signals),
        input_rejected=msg.input_rejected,
    )
    return StepResult(state=state_from_proto(msg.state), render=render)


# --- inputs -----------------------------------------------------------------------------


def input_to_proto(value: JSONValue | ToolResult) -> pb.Input:
    if isinstance(value, ToolResult):
        return pb.Input(tool_result=tool_result_to_proto(value))
    if isinstance(value, str):
        return pb.Input(text=value)
    return pb.Input(value_json=dump_json(value, "input") or "null")


def input_from_proto(msg: pb.Input, text_limit: int) -> JSONValue | ToolResult:
    """The engine input of a request; an unset input is the empty text (auto-advance).
    Text comes back as sent: the host that steps the engine sanitises it once
    (docs/engine.md, "Input": SessionManager.navigate, the Engine service)."""
    kind = msg.WhichOneof("kind")
    if kind == "tool_result":
        if not msg.tool_result.id:
            raise InvalidInput("input.tool_result.id: must not be empty", field="input.tool_result.id")
        return tool_result_from_proto(msg.tool_result, "input.tool_result")
    if kind == "value_json":
        if len(msg.value_json.encode()) > text_limit:
            raise InvalidInput(
                f"input exceeds maximum allowed size: size={len(msg.value_json.encode())} limit={text_limit}",
                field="input.value_json",
            )
        return load_json(msg.value_json, "input.value_json")
    return msg.text


# --- diffs and graph changes ------------------------------------------------------------


def diff_to_proto(diff: StateDiff) -> pb.StateDiff:
    msg = pb.StateDiff(session_id=diff.session_id)
    if diff.current_node_id is not None:
        msg.current_node_id = diff.current_node_id
    if diff.status is not None:
        msg.status = status_to_proto(diff.status)
    if diff.context is not None:
        msg.context_json = dump_json(dict(diff.context), "diff.context")
    if diff.history_appended is not None:
        msg.history.node_ids.extend(diff.history_appended)
    if diff.terminated is not None:
        msg.terminated = diff.terminated
    return msg


def diff_from_proto(msg: pb.StateDiff, revision: int = 0) -> StateDiff:
    """``revision``: where the diff sits (the watch response's, not part of the message)."""
    context: Mapping[str, Any] | None = None
    if msg.context_json:
        context = load_json_object(msg.context_json, "diff.context_json")
    return StateDiff(
        session_id=msg.session_id,
        current_node_id=msg.current_node_id if msg.HasField("current_node_id") else None,
        status=status_from_proto(msg.status) if msg.HasField("status") else None,
        context=context,
        history_appended=tuple(msg.history.node_ids) if msg.HasField("history") else None,
        terminated=msg.terminated if msg.HasField("terminated") else None,
        revision=revision,
    )


def watch_response(event: SessionEvent) -> spb.SessionsWatchResponse:
    """A session watch's event on the wire (a diff, a bookmark or the deletion)."""
    if event.diff is not None:
        return spb.SessionsWatchResponse(diff=diff_to_proto(event.diff), revision=event.revision)
    return spb.SessionsWatchResponse(revision=event.revision, bookmark=not event.deleted, deleted=event.deleted)


def watch_event_from_proto(msg: spb.SessionsWatchResponse) -> SessionEvent:
    if msg.deleted:
        return SessionEvent(revision=msg.revision, deleted=True)
    if msg.bookmark:
        return SessionEvent(revision=msg.revision)
    return SessionEvent(revision=msg.revision, diff=diff_from_proto(msg.diff, msg.revision))


def graph_change_fields(change: GraphChange) -> tuple[list[str], int]:
    """The wire fields of a graph change: sorted node IDs (empty = everything) and revision."""
    return sorted(change.node_ids), change.revision


def graph_change_from_fields(node_ids: list[str], revision: int) -> GraphChange:
    return GraphChange(node_ids=frozenset(node_ids), revision=revision)
