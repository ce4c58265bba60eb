"""The ActionDispatcher service: what a tool sidecar runs (exposes any ActionDispatcher)."""

from __future__ import annotations

import grpc  # type: ignore[import-untyped]

from trellis.api import convert
from trellis.api.v1 import dispatcher_pb2 as dpb
from trellis.api.v1 import dispatcher_pb2_grpc
from trellis.dispatching import TOOL_NOT_FOUND_ERROR
from trellis.domain import ToolResult
from trellis.errors import InvalidInput
from trellis.ports.dispatcher import ActionDispatcher, ToolLister
from trellis.server.guards import Servicer, guarded_unary
from trellis.server.observe import Observer


class ActionDispatcherService(Servicer, dispatcher_pb2_grpc.ActionDispatcherServicer):
    service_name = "ActionDispatcher"

    def __init__(self, dispatcher: ActionDispatcher, observer: Observer) -> None:
        super().__init__(observer)
        self._dispatcher = dispatcher

    @guarded_unary
    async def Dispatch(
        self, request: dpb.DispatchRequest, context: grpc.aio.ServicerContext
    ) -> dpb.DispatchResponse:
        if not request.call.name:
            raise InvalidInput("call.name: must not be empty", field="call.name")
        call = convert.tool_call_from_proto(request.call, "call")
        dispatch_context = (
            convert.dispatch_context_from_proto(request.context) if request.HasField("context") else None
        )
        if not self._dispatcher.serves(call.name):
            # Same answer as a router without a route: a failed tool, which the
            # flow can handle with on_error, not a transport error.
            result = ToolResult(
                id=call.id,
                is_error=True,
                error=f"tool not found: {call.name}",
                error_type=TOOL_NOT_FOUND_ERROR,
            )
        else:
            result = await self._dispatcher.dispatch(call, dispatch_context)
        return dpb.DispatchResponse(result=convert.tool_result_to_proto(result))

    @guarded_unary
    async def ListTools(
        self, request: dpb.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> dpb.ListToolsResponse:
        if not isinstance(self._dispatcher, ToolLister):
            # A dispatcher that cannot list its tools: callers then send it every call.
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this dispatcher does not list its tools")
        assert isinstance(self._dispatcher, ToolLister)
        tools = await self._dispatcher.list_tools()
        return dpb.ListToolsResponse(tools=[convert.tool_info_to_proto(t) for t in tools])
