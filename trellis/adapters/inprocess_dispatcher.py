"""InProcessDispatcher: tools that are Python callables of this process.

``InProcessDispatcher({"add": add, "fetch": fetch})`` where each callable takes
the call's arguments (a dict) and returns a JSON-compatible result, or an
awaitable of one. A callable that raises gives an ``is_error`` result naming
the exception; it never escapes. Plain functions run on the event loop, so a
tool that blocks should be ``async`` (or use ``asyncio.to_thread`` itself).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping

import orjson

from trellis.dispatching import DispatchContext
from trellis.domain import JSONValue, ToolCall, ToolResult

ToolFunction = Callable[[dict[str, JSONValue]], JSONValue | Awaitable[JSONValue]]


class InProcessDispatcher:
    def __init__(self, tools: Mapping[str, ToolFunction]) -> None:
        self._tools = dict(tools)

    def serves(self, tool_name: str) -> bool:
        return tool_name in self._tools

    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        function = self._tools.get(call.name)
        if function is None:
            return ToolResult(id=call.id, is_error=True, error=f"tool not found: {call.name}")
        try:
            # A copy, so that a tool mutating its arguments cannot reach the engine's state.
            args: dict[str, JSONValue] = orjson.loads(orjson.dumps(dict(call.args or {})))
            outcome = function(args)
            if inspect.isawaitable(outcome):
                outcome = await outcome
        except Exception as exc:
            return ToolResult(
                id=call.id,
                is_error=True,
                error=f"tool {call.name} failed: {_describe(exc)}",
                error_type=type(exc).__name__,
            )
        try:
            # Results go into the session's context: they must survive a JSON round trip.
            result = orjson.loads(orjson.dumps(outcome))
        except TypeError as exc:
            return ToolResult(
                id=call.id, is_error=True, error=f"tool {call.name} returned a value that is not JSON: {exc}"
            )
        return ToolResult(id=call.id, result=result)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
