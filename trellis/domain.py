"""Domain types shared by every part of trellis (docs/engine.md).

Nodes are immutable: the loader builds them once and the engine compiles them
once. States are treated as values: the engine never mutates a state it was
given, it returns a new one (copy-on-write of the top-level containers; nested
context values are shared and must not be mutated in place by anyone).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

JSONValue = Any
"""A JSON-compatible value: None, bool, int, float, str, list or str-keyed dict."""

SYS_NAMESPACE = "sys"
ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Transition:
    to_node_id: str
    condition: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    args: Mapping[str, JSONValue] | None = None
    metadata: Mapping[str, str] | None = None
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The answer to a ToolCall. Neither flag set means success (docs/engine.md, "Tools and sagas")."""

    id: str
    result: JSONValue = None
    is_error: bool = False
    is_denied: bool = False
    error: str = ""
    # What kind of failure (an exception's class name, "Timeout", ...): retry policies
    # name the types not worth retrying. Empty = unknown.
    error_type: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool description for LLM hosts; the engine never executes it."""

    name: str
    description: str = ""
    parameters: Mapping[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FormatItem:
    text: str
    condition: str = ""


@dataclass(frozen=True, slots=True)
class Node:
    """A node in canonical form, after the loader applied the sugar of its file form
    (docs/engine.md, "Node fields").

    ``source`` names where the node came from (a file path relative to the graph
    root, an etcd key, ...) so errors can point at it; it is not part of the
    behaviour.
    """

    id: str
    type: str = "text"
    wait: bool = False
    save_to: str = ""
    required_context: tuple[str, ...] = ()
    default_context: Mapping[str, JSONValue] = field(default_factory=dict)
    context_schema: Mapping[str, str] = field(default_factory=dict)
    content: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    transitions: tuple[Transition, ...] = ()
    on_error: str = ""
    on_denied: str = ""
    on_signal: Mapping[str, str] = field(default_factory=dict)
    on_signal_default: Mapping[str, str] = field(default_factory=dict)
    input_type: str = ""
    input_options: tuple[str, ...] = ()
    input_default: str = ""
    do: ToolCall | None = None
    undo: ToolCall | None = None
    tools: tuple[Tool, ...] = ()
    messages: Mapping[str, tuple[FormatItem, ...]] = field(default_factory=dict)
    timeout: str = ""
    source: str = ""


class Status(enum.StrEnum):
    ACTIVE = "active"
    WAITING_FOR_TOOL = "waiting_for_tool"
    ROLLING_BACK = "rolling_back"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class AppliedRequest:
    """A request applied to a session: its caller-chosen ID and a digest of what it asked
    (so the same ID with a different request is told apart from a retry)."""

    id: str
    digest: str

    def to_json(self) -> list[JSONValue]:
        return [self.id, self.digest]

    @staticmethod
    def list_from_json(value: object) -> tuple[AppliedRequest, ...]:
        """The stored ``requests`` field (absent: none); raises ValueError when malformed."""
        if value is None:
            return ()
        if not isinstance(value, list) or not all(
            isinstance(item, list) and len(item) == 2 and all(isinstance(part, str) for part in item)
            for item in value
        ):
            raise ValueError("state field 'requests' must be a list of [request_id, digest] pairs")
        return tuple(AppliedRequest(item[0], item[1]) for item in value)


@dataclass(slots=True)
class State:
    """A session's state (docs/engine.md, "State") plus the store revision it was loaded at.

    ``revision`` is 0 for a state that was never saved; stores set it on load and
    compare it on a conditional save. It is not part of the engine's behaviour
    and is not carried into the JSON form of the state.
    """

    session_id: str
    current_node_id: str
    status: Status = Status.ACTIVE
    pending_tool_call: str = ""
    context: dict[str, JSONValue] = field(default_factory=dict)
    system_context: dict[str, JSONValue] = field(default_factory=dict)
    locale: str = ""
    history: list[str] = field(default_factory=list)
    terminated: bool = False
    revision: int = 0
    fence_token: int = 0
    """The largest fencing token a save of this session was made under, when saves go
    through the StateStore service (it refuses a save under an older one); 0: none."""
    requests: tuple[AppliedRequest, ...] = ()
    """The request IDs of the last steps applied to this session, oldest first (bounded:
    trellis.request_ids). Stored with the state, in the same write as each step, so a
    repeated request is recognised on any replica; not part of the engine's behaviour."""

    @classmethod
    def new(cls, session_id: str, node_id: str) -> State:
        return cls(session_id=session_id, current_node_id=node_id, history=[node_id])

    def clone(self) -> State:
        """A copy whose top-level containers can be changed without touching ``self``."""
        return State(
            session_id=self.session_id,
            current_node_id=self.current_node_id,
            status=self.status,
            pending_tool_call=self.pending_tool_call,
            context=dict(self.context),
            system_context=dict(self.system_context),
            locale=self.locale,
            history=list(self.history),
            terminated=self.terminated,
            revision=self.revision,
            fence_token=self.fence_token,
            requests=self.requests,
        )

    def to_json(self) -> dict[str, JSONValue]:
        """The JSON form of the state (docs/engine.md, "State"; empty optional fields omitted)."""
        out: dict[str, JSONValue] = {
            "session_id": self.session_id,
            "current_node_id": self.current_node_id,
            "status": self.status.value,
            "context": self.context,
            "system_context": self.system_context,
        }
        if self.pending_tool_call:
            out["pending_tool_call"] = self.pending_tool_call
        if self.locale:
            out["locale"] = self.locale
        if self.history:
            out["history"] = self.history
        if self.terminated:
            out["terminated"] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, JSONValue], revision: int = 0) -> State:
        """Parse the JSON form; raises ValueError naming the field that is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("state must be a JSON object")

        def text(key: str, required: bool = False) -> str:
            value = data.get(key, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise ValueError(f"state field {key!r} must be a string")
            if required and key not in data:
                raise ValueError(f"state field {key!r} is required")
            return value

        def mapping(key: str) -> dict[str, JSONValue]:
            value = data.get(key) or {}
            if not isinstance(value, Mapping):
                raise ValueError(f"state field {key!r} must be an object")
            return dict(value)

        status_text = text("status") or Status.ACTIVE.value
        try:
            status = Status(status_text)
        except ValueError:
            raise ValueError(f"state field 'status' has unknown value {status_text!r}") from None
        history = data.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
            raise ValueError("state field 'history' must be a list of strings")
        terminated = data.get("terminated", False)
        if not isinstance(terminated, bool):
            raise ValueError("state field 'terminated' must be a boolean")
        requests = AppliedRequest.list_from_json(data.get("requests"))
        fence_token = data.get("fence", 0)
        if not isinstance(fence_token, int) or isinstance(fence_token, bool) or fence_token < 0:
            raise ValueError("state field 'fence' must be a non-negative integer")
        return cls(
            session_id=text("session_id", required=True),
            current_node_id=text("current_node_id"),
            status=status,
            pending_tool_call=text("pending_tool_call"),
            context=mapping("context"),
            system_context=mapping("system_context"),
            locale=text("locale"),
            history=list(history),
            terminated=terminated,
            revision=revision,
            fence_token=fence_token,
            requests=requests,
        )


class ActionType(enum.StrEnum):
    RENDER_CONTENT = "RENDER_CONTENT"
    REQUEST_INPUT = "REQUEST_INPUT"
    CALL_TOOL = "CALL_TOOL"
    SYSTEM_MESSAGE = "SYSTEM_MESSAGE"


@dataclass(frozen=True, slots=True)
class InputRequest:
    """Payload of REQUEST_INPUT. ``timeout`` is in seconds; 0 means no timeout."""

    type: str = "text"
    options: tuple[str, ...] = ()
    default: str = ""
    timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class Action:
    """One action of a render. The payload type follows the action type:
    RENDER_CONTENT and SYSTEM_MESSAGE → str, REQUEST_INPUT → InputRequest,
    CALL_TOOL → ToolCall. ``node_id`` is the node whose render produced it (a step
    that passes through text nodes shows actions of several); "" for notices. It is
    information for hosts, not part of an action's value (equality ignores it)."""

    type: ActionType
    payload: str | InputRequest | ToolCall
    node_id: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class RenderResult:
    """The actions of a render and whether its node is an end node (docs/engine.md,
    "Statuses"). ``signals`` are the signals the current node accepts (its own and
    the entry node's defaults); ``input_rejected`` says the step's input matched no
    transition. Both inform hosts and are left out of equality."""

    actions: tuple[Action, ...]
    terminal: bool
    signals: tuple[str, ...] = field(default=(), compare=False)
    input_rejected: bool = field(default=False, compare=False)

    def tool_call(self) -> ToolCall | None:
        for action in self.actions:
            if action.type is ActionType.CALL_TOOL:
                assert isinstance(action.payload, ToolCall)
                return action.payload
        return None

    def input_request(self) -> InputRequest | None:
        for action in self.actions:
            if action.type is ActionType.REQUEST_INPUT:
                assert isinstance(action.payload, InputRequest)
                return action.payload
        return None


@dataclass(frozen=True, slots=True)
class StateDiff:
    """What changed (docs/api.md, "Sessions": Watch). Absent parts are None; ``context`` maps removed keys to
    None."""

    session_id: str
    current_node_id: str | None = None
    status: Status | None = None
    context: Mapping[str, JSONValue] | None = None
    history_appended: tuple[str, ...] | None = None
    terminated: bool | None = None
    revision: int = field(default=0, compare=False)
    """The stored revision of the state this diff leads to (0: not known). Where the diff
    sits, not what changed, so equality ignores it; a watch resumes after it."""

    def to_json(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {"session_id": self.session_id}
        if self.current_node_id is not None:
            out["current_node_id"] = self.current_node_id
        if self.status is not None:
            out["status"] = self.status.value
        if self.context is not None:
            out["context"] = dict(self.context)
        if self.history_appended is not None:
            out["history"] = {"appended": list(self.history_appended)}
        if self.terminated is not None:
            out["terminated"] = self.terminated
        return out


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """One thing a session watch reports (SessionManager.watch_events), at ``revision``:
    a saved change (``diff``), the deletion (``deleted``; the watch ends), or a bookmark
    (neither: every change up to ``revision`` has been reported). A watch resumed from
    ``revision + 1`` of the last event received misses and repeats nothing."""

    revision: int
    diff: StateDiff | None = None
    deleted: bool = False

    @property
    def bookmark(self) -> bool:
        return self.diff is None and not self.deleted


class HookKind(enum.StrEnum):
    NODE_ENTER = "node_enter"
    NODE_LEAVE = "node_leave"
    TOOL_CALL = "tool_call"
    TOOL_RETURN = "tool_return"


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """docs/engine.md, "Lifecycle events". ``data`` is the tool input (args) or output (result) for tool
    events."""

    kind: HookKind
    node_id: str
    node_type: str = ""
    tool_name: str = ""
    data: JSONValue = None
    is_error: bool = False
    timestamp: float = 0.0


@dataclass(frozen=True, slots=True)
class StepResult:
    """What a durable step returns: the new state (with its stored revision), the
    actions of its current node and whether the session is over. ``created``: a Start
    that created the session (False for one that found it). ``replayed``: the step's
    request ID had already been applied, nothing was applied again and ``state`` is the
    session as it is now (trellis.request_ids)."""

    state: State
    render: RenderResult
    created: bool = False
    replayed: bool = False

    @property
    def terminal(self) -> bool:
        return self.state.status is Status.TERMINATED or self.render.terminal
