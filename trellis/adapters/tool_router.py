"""ToolRouter: one ActionDispatcher made of several, chosen per tool name.

``ToolRouter({"charge": grpc_payments}, default=process_tools)``: a call goes to
the dispatcher routed for its name, else to ``default``. The composition root
builds one from the ``dispatcher:`` configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

from trellis.domain import ToolCall, ToolResult
from trellis.ports.dispatcher import ActionDispatcher


class ToolRouter:
    def __init__(
        self, routes: Mapping[str, ActionDispatcher], default: ActionDispatcher | None = None
    ) -> None:
        self._routes = dict(routes)
        self._default = default

    def _target(self, tool_name: str) -> ActionDispatcher | None:
        return self._routes.get(tool_name, self._default)

    def serves(self, tool_name: str) -> bool:
        target = self._target(tool_name)
        return target is not None and target.serves(tool_name)

    async def dispatch(self, call: ToolCall) -> ToolResult:
        target = self._target(call.name)
        if target is None:
            return ToolResult(id=call.id, is_error=True, error=f"tool not found: {call.name} (no route)")
        return await target.dispatch(call)
