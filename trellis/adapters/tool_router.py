"""ToolRouter: one ActionDispatcher made of several, chosen per tool name.

``ToolRouter({"charge": grpc_payments}, default=process_tools)``: a call goes to
the dispatcher routed for its name, else to the first of ``discovered`` that
serves it (sidecars that list their tools), else to ``default``. The composition
root builds one from the ``dispatcher:`` configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from trellis.dispatching import TOOL_NOT_FOUND_ERROR, DispatchContext
from trellis.domain import ToolCall, ToolResult
from trellis.ports.dispatcher import ActionDispatcher


class ToolRouter:
    def __init__(
        self,
        routes: Mapping[str, ActionDispatcher],
        default: ActionDispatcher | None = None,
        discovered: Sequence[ActionDispatcher] = (),
    ) -> None:
        self._routes = dict(routes)
        self._default = default
        self._discovered = tuple(discovered)

    def _target(self, tool_name: str) -> ActionDispatcher | None:
        routed = self._routes.get(tool_name)
        if routed is not None:
            return routed
        # Asked at every call: a sidecar's tool list changes when it restarts.
        for member in self._discovered:
            if member.serves(tool_name):
                return member
        return self._default

    def serves(self, tool_name: str) -> bool:
        target = self._target(tool_name)
        return target is not None and target.serves(tool_name)

    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        target = self._target(call.name)
        if target is None:
            return ToolResult(
                id=call.id,
                is_error=True,
                error=f"tool not found: {call.name} (no route)",
                error_type=TOOL_NOT_FOUND_ERROR,
            )
        return await target.dispatch(call, context)
