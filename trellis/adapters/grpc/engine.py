"""RemoteEngine: the EnginePort as a client of a server's stateless Engine service."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.api import convert
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.domain import JSONValue, Node, RenderResult, State, StepResult, ToolResult
from trellis.errors import InvalidInput

SIGNATURES_KEPT = 4096


class _Signatures:
    """The signatures of the states a signing server returned, keyed by the state's
    encoding (revision and signature excluded), so a state sent back unchanged carries
    its signature although the domain State has no field for it. Bounded (LRU)."""

    def __init__(self, size: int = SIGNATURES_KEPT) -> None:
        self._size = size
        self._by_state: OrderedDict[bytes, bytes] = OrderedDict()

    @staticmethod
    def _key(msg: pb.State) -> bytes:
        bare = pb.State()
        bare.CopyFrom(msg)
        bare.ClearField("signature")
        bare.ClearField("revision")
        return bytes(bare.SerializeToString(deterministic=True))

    def remember(self, msg: pb.State) -> None:
        if not msg.signature:
            return
        key = self._key(msg)
        self._by_state[key] = msg.signature
        self._by_state.move_to_end(key)
        while len(self._by_state) > self._size:
            self._by_state.popitem(last=False)

    def attach(self, msg: pb.State) -> pb.State:
        signature = self._by_state.get(self._key(msg)) if self._by_state else None
        if signature is not None:
            msg.signature = signature
        return msg


class RemoteEngine:
    """Engine calls answered by another process; the caller keeps the state.

    The EnginePort methods return what the port says (a State from start/navigate/
    signal); the ``*_step`` methods return the rendered StepResult the service
    answers with, saving a Render round trip. Every call is retried on
    UNAVAILABLE: the stateless engine has no side effects.
    """

    def __init__(self, channel: RemoteChannel, *, owns_channel: bool = True) -> None:
        self._channel = channel
        self._stub = engine_pb2_grpc.EngineStub(channel.channel)
        self._owns_channel = owns_channel
        self._signatures = _Signatures()

    def invalidate(self, node_ids: Iterable[str] | None = None) -> None:
        """Nothing to forget here: the serving process follows its own loader."""

    def _state_out(self, state: State, operation: str) -> pb.State:
        # The same error as the in-process engine's, rather than a crash in the encoder.
        if state is None:
            raise InvalidInput(f"{operation} needs a state")
        return self._signatures.attach(convert.state_to_proto(state))

    def _step_in(self, msg: pb.Step) -> StepResult:
        self._signatures.remember(msg.state)
        return convert.step_from_proto(msg)

    # --- rendered steps -------------------------------------------------------------

    async def start_step(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> StepResult:
        request = epb.EngineStartRequest(
            session_id=session_id, context_json=convert.dump_json(dict(context or {}), "context")
        )
        reply = await self._channel.call(self._stub.Start, request, idempotent=True)
        return self._step_in(reply.step)

    async def navigate_step(self, state: State, input: JSONValue | ToolResult) -> StepResult:
        request = epb.EngineNavigateRequest(
            state=self._state_out(state, "navigate"), input=convert.input_to_proto(input)
        )
        reply = await self._channel.call(self._stub.Navigate, request, idempotent=True)
        return self._step_in(reply.step)

    async def signal_step(self, state: State, name: str) -> StepResult:
        request = epb.EngineSignalRequest(state=self._state_out(state, "signal"), signal=name)
        reply = await self._channel.call(self._stub.Signal, request, idempotent=True)
        return self._step_in(reply.step)

    # --- EnginePort -----------------------------------------------------------------

    async def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> State:
        return (await self.start_step(session_id, context)).state

    async def render(self, state: State) -> RenderResult:
        request = epb.EngineRenderRequest(state=self._state_out(state, "render"))
        reply = await self._channel.call(self._stub.Render, request, idempotent=True)
        return RenderResult(
            actions=tuple(convert.action_from_proto(a) for a in reply.actions),
            terminal=reply.terminal,
            signals=tuple(reply.signals),
        )

    async def navigate(self, state: State, input: JSONValue | ToolResult) -> State:
        return (await self.navigate_step(state, input)).state

    async def signal(self, state: State, name: str) -> State:
        return (await self.signal_step(state, name)).state

    async def inspect(self) -> list[Node]:
        reply = await self._channel.call(self._stub.Inspect, epb.EngineInspectRequest(), idempotent=True)
        return [convert.node_from_proto(n) for n in reply.nodes]

    async def probe(self) -> None:
        await self._channel.probe()

    async def aclose(self) -> None:
        if self._owns_channel:
            await self._channel.close()
