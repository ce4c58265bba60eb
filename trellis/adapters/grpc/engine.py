"""RemoteEngine: the EnginePort as a client of a server's stateless Engine service."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.api import convert, step_reports
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.domain import JSONValue, Node, RenderResult, State, StepResult, ToolResult
from trellis.errors import InvalidInput
from trellis.ports.engine import LifecycleHook, deliver

SIGNATURES_KEPT = 4096
LOG = logging.getLogger("trellis.engine")
StepReply = epb.EngineStartResponse | epb.EngineNavigateResponse | epb.EngineSignalResponse


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

    It behaves as the in-process engine does: when rendering the node a call reached
    fails, start/navigate/signal still return the state (the reply carries the
    render error apart) and a later ``render`` raises it; the ``*_step`` methods,
    which stand for the call and its render, raise it, with the new state in its
    ``state`` attribute. ``hooks`` receive the
    lifecycle events the server's engine fired for each successful call, in order,
    before the call returns (a hook's exception is logged, as in process).
    """

    def __init__(
        self, channel: RemoteChannel, *, owns_channel: bool = True, hooks: Iterable[LifecycleHook] = ()
    ) -> None:
        self._channel = channel
        self._stub = engine_pb2_grpc.EngineStub(channel.channel)
        self._owns_channel = owns_channel
        self._signatures = _Signatures()
        self._hooks = tuple(hooks)

    def invalidate(self, node_ids: Iterable[str] | None = None) -> None:
        """Nothing to forget here: the serving process follows its own loader."""

    def _state_out(self, state: State, operation: str) -> pb.State:
        # The same error as the in-process engine's, rather than a crash in the encoder.
        if state is None:
            raise InvalidInput(f"{operation} needs a state")
        return self._signatures.attach(convert.state_to_proto(state))

    def _reply_in(self, reply: StepReply) -> tuple[StepResult, BaseException | None]:
        """The step of a reply and its render error, after replaying its events."""
        if self._hooks:
            deliver(self._hooks, step_reports.events_from_proto(reply.events), LOG)
        self._signatures.remember(reply.step.state)
        step = convert.step_from_proto(reply.step)
        if reply.HasField("render_error"):
            return step, step_reports.error_from_reported(reply.render_error)
        return step, None

    @staticmethod
    def _rendered(step: StepResult, error: BaseException | None) -> StepResult:
        if error is not None:
            # The call moved the state; the caller keeps it from the error to go on from it.
            error.state = step.state  # type: ignore[attr-defined]
            raise error
        return step

    # --- rendered steps -------------------------------------------------------------

    async def _start(
        self, session_id: str, context: Mapping[str, JSONValue] | None
    ) -> tuple[StepResult, BaseException | None]:
        request = epb.EngineStartRequest(
            session_id=session_id, context_json=convert.dump_json(dict(context or {}), "context")
        )
        return await self._call(self._stub.Start, request)

    async def _navigate(
        self, state: State, input: JSONValue | ToolResult
    ) -> tuple[StepResult, BaseException | None]:
        request = epb.EngineNavigateRequest(
            state=self._state_out(state, "navigate"), input=convert.input_to_proto(input)
        )
        return await self._call(self._stub.Navigate, request)

    async def _signal(self, state: State, name: str) -> tuple[StepResult, BaseException | None]:
        request = epb.EngineSignalRequest(state=self._state_out(state, "signal"), signal=name)
        return await self._call(self._stub.Signal, request)

    async def _call(
        self, method: Callable[..., Awaitable[StepReply]], request: Any
    ) -> tuple[StepResult, BaseException | None]:
        try:
            reply = await self._channel.call(method, request, idempotent=True)
        except Exception as exc:
            # A failed call may have fired events too (an unhandled tool error's tool_return).
            if self._hooks:
                deliver(self._hooks, step_reports.events_of_failure(exc), LOG)
            raise
        return self._reply_in(reply)

    async def start_step(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> StepResult:
        return self._rendered(*await self._start(session_id, context))

    async def navigate_step(self, state: State, input: JSONValue | ToolResult) -> StepResult:
        return self._rendered(*await self._navigate(state, input))

    async def signal_step(self, state: State, name: str) -> StepResult:
        return self._rendered(*await self._signal(state, name))

    # --- EnginePort -----------------------------------------------------------------

    async def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> State:
        return (await self._start(session_id, context))[0].state

    async def render(self, state: State) -> RenderResult:
        request = epb.EngineRenderRequest(state=self._state_out(state, "render"))
        reply = await self._channel.call(self._stub.Render, request, idempotent=True)
        return RenderResult(
            actions=tuple(convert.action_from_proto(a) for a in reply.actions),
            terminal=reply.terminal,
            signals=tuple(reply.signals),
        )

    async def navigate(self, state: State, input: JSONValue | ToolResult) -> State:
        return (await self._navigate(state, input))[0].state

    async def signal(self, state: State, name: str) -> State:
        return (await self._signal(state, name))[0].state

    async def inspect(self) -> list[Node]:
        reply = await self._channel.call(self._stub.Inspect, epb.EngineInspectRequest(), idempotent=True)
        return [convert.node_from_proto(n) for n in reply.nodes]

    async def probe(self) -> None:
        await self._channel.probe()

    async def aclose(self) -> None:
        if self._owns_channel:
            await self._channel.close()
