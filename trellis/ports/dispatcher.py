"""ActionDispatcher: runs the side effects the engine asks for.

Errors named here are classes of ``trellis.errors``; trellis.contracts.dispatcher
checks the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from trellis.dispatching import DispatchContext, ToolInfo
from trellis.domain import ToolCall, ToolResult


@runtime_checkable
class ActionDispatcher(Protocol):
    def serves(self, tool_name: str) -> bool:
        """Whether this dispatcher runs ``tool_name``. Calls for tools no
        dispatcher serves go back to the caller as pending CALL_TOOL actions."""
        ...

    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        """Run ``call`` and report its outcome. A tool that fails, hangs past its
        timeout or prints garbage is a ToolResult with ``is_error`` set, never an
        exception. ``call.idempotency_key`` lets the tool ignore a retry.
        ``context`` (optional): the session, node, attempt, deadline and the fencing
        token of the session's lock, for dispatchers that pass them on.
        The result carries ``call.id``, numbers keep their exact type and value
        (an int stays an int, 64-bit range), and it shares no list or map with
        ``call.args``. Concurrent calls are independent. An unknown tool is an
        error result naming it.
        Raises (trellis.errors) DispatchError, or BackendUnavailable for a remote
        dispatcher, only when the call could not be attempted at all."""
        ...


@runtime_checkable
class ToolLister(Protocol):
    """A dispatcher that can say which tools it serves and how to call them."""

    async def list_tools(self) -> Sequence[ToolInfo]: ...
