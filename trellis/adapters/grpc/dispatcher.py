"""RemoteDispatcher: the ActionDispatcher port as a client of a tool sidecar's service."""

from __future__ import annotations

from collections.abc import Iterable

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.api import convert
from trellis.api.v1 import dispatcher_pb2 as dpb
from trellis.api.v1 import dispatcher_pb2_grpc
from trellis.domain import ToolCall, ToolResult
from trellis.errors import BackendUnavailable, DispatchError, TrellisError


class RemoteDispatcher:
    """Runs tool calls on a remote ActionDispatcher service.

    ``tools``: the names this dispatcher serves (None = every tool). The set is
    configured, not asked from the sidecar, so ``serves`` stays a cheap,
    synchronous answer. Calls are not retried here: the session manager's step
    fails as a whole and the client retries it with the same idempotency key.
    A sidecar that cannot be reached raises BackendUnavailable; other RPC
    failures raise DispatchError (the call could not be attempted).
    """

    def __init__(
        self, channel: RemoteChannel, tools: Iterable[str] | None = None, *, owns_channel: bool = True
    ) -> None:
        self._channel = channel
        self._stub = dispatcher_pb2_grpc.ActionDispatcherStub(channel.channel)
        self._tools = frozenset(tools) if tools is not None else None
        self._owns_channel = owns_channel

    @property
    def tools(self) -> frozenset[str] | None:
        return self._tools

    def serves(self, tool_name: str) -> bool:
        return self._tools is None or tool_name in self._tools

    async def dispatch(self, call: ToolCall) -> ToolResult:
        request = dpb.DispatchRequest(call=convert.tool_call_to_proto(call))
        try:
            reply = await self._channel.call(self._stub.Dispatch, request, idempotent=False)
        except (BackendUnavailable, DispatchError):
            raise
        except TrellisError as exc:
            raise DispatchError(
                f"tool {call.name!r} (call {call.id!r}) could not be dispatched: {exc}"
            ) from exc
        return convert.tool_result_from_proto(reply.result, "result")

    async def probe(self) -> None:
        await self._channel.probe()

    async def aclose(self) -> None:
        if self._owns_channel:
            await self._channel.close()
