"""A server's say on whether a tool may run: allow, deny, or ask the session first.

The policy of a tool (``dispatcher: policies: <tool>: approval:`` in the server
configuration) is one of

* ``allow`` (the default): a tool a dispatcher serves runs inside the step;
* ``deny``: it never runs; the step answers the call with a denied result
  (``is_denied``), so the engine takes the node's ``on_denied`` (or the default
  error node, or ends the session, docs/engine.md, "Tools and sagas"), whoever would have run it;
* ``confirm``: the step stops before running it and asks the session: the
  reply shows the call's prompt and a ``confirm`` input request; the next
  input answers it (yes/y/true/1 runs the tool, no/n/false/0 denies it, as a
  confirm node reads answers). Only tools the server runs are confirmed here:
  a tool the caller runs is the caller's to confirm.

This is what ``trellis run`` does at a terminal (ask before each tool, ``--yes``
to allow all), for servers, where the answer travels as the session's input.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

import orjson

from trellis.domain import Action, ActionType, InputRequest, JSONValue, RenderResult, ToolCall, ToolResult
from trellis.errors import InvalidConfirmation, InvalidInput
from trellis.go_values import go_str


class Approval(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    CONFIRM = "confirm"


DENIED_BY_POLICY: Final = "denied by the server's tool policy"
DENIED_BY_USER: Final = "User denied execution by policy"
_YES: Final = frozenset({"y", "yes", "true", "1"})
_NO: Final = frozenset({"n", "no", "false", "0"})


class ToolApprovals:
    """The approval of each tool by name; tools not named are allowed."""

    def __init__(self, approvals: Mapping[str, Approval]) -> None:
        self._approvals = dict(approvals)

    def __bool__(self) -> bool:
        return any(a is not Approval.ALLOW for a in self._approvals.values())

    def of(self, tool_name: str) -> Approval:
        return self._approvals.get(tool_name, Approval.ALLOW)


def denied(call: ToolCall, reason: str = DENIED_BY_POLICY) -> ToolResult:
    return ToolResult(id=call.id, is_denied=True, error=reason)


def confirmation(render: RenderResult, call: ToolCall) -> RenderResult:
    """``render`` with its CALL_TOOL replaced by the question: the call's ``confirm_msg``
    (or what tool, with which arguments) and a ``confirm`` input request."""
    message = go_str((call.metadata or {}).get("confirm_msg", "")) or (
        f"Tool Request: '{call.name}' (ID: {call.id})\nArgs: {orjson.dumps(call.args).decode()}\n"
        "Allow execution?"
    )
    kept = tuple(a for a in render.actions if a.type is not ActionType.CALL_TOOL)
    question = (
        Action(ActionType.SYSTEM_MESSAGE, message),
        Action(ActionType.REQUEST_INPUT, InputRequest(type="confirm", options=("yes", "no"), default="no")),
    )
    return RenderResult(actions=(*kept, *question), terminal=False)


def approved(call: ToolCall, answer: JSONValue | ToolResult) -> bool:
    """The session's answer to the confirmation of ``call``. Raises InvalidConfirmation for
    anything but yes/no (the session stays where it is and asks again)."""
    if isinstance(answer, ToolResult):
        raise InvalidInput(
            f"tool '{call.name}' waits for confirmation, not for a result: answer yes or no"
        )
    text = go_str(answer).strip().lower()
    if text in _YES:
        return True
    if text in _NO or text == "":  # the request's default: nothing runs unless asked to
        return False
    raise InvalidConfirmation(go_str(answer))
