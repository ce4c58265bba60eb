"""The stateless Engine service: any EnginePort, the client carries the state."""

from __future__ import annotations

import grpc  # type: ignore[import-untyped]

from trellis.api import convert, step_reports
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.domain import RenderResult, State, StepResult
from trellis.errors import TrellisError
from trellis.no_match import matched_nothing, with_no_match_notice
from trellis.ports.engine import EnginePort
from trellis.sanitize import sanitize_input
from trellis.server.guards import Servicer, guarded_unary
from trellis.server.lifecycle_capture import CapturedEvents, capturing
from trellis.server.limits import Limits
from trellis.server.observe import Observer
from trellis.server.signing import StateSigner

StepResponse = epb.EngineStartResponse | epb.EngineNavigateResponse | epb.EngineSignalResponse


class EngineService(Servicer, engine_pb2_grpc.EngineServicer):
    service_name = "Engine"

    def __init__(
        self, engine: EnginePort, observer: Observer, limits: Limits, signer: StateSigner | None = None
    ) -> None:
        super().__init__(observer, limits)
        self._engine = engine
        self._limits = limits
        self._signer = signer

    def _state_in(self, msg: pb.State) -> State:
        self._limits.check_state(msg)
        state = convert.state_from_proto(msg)
        if self._signer is not None:
            self._signer.verify(state, msg.signature)
        state.revision = 0  # the stateless service has no store: a client revision means nothing
        return state

    async def _step_out(
        self,
        response: StepResponse,
        state: State,
        captured: CapturedEvents,
        *,
        no_match: bool = False,
    ) -> None:
        """Fill ``response`` with the new state, signed, the actions of its render (after a
        "no transition matched" message when ``no_match``) and the call's events.

        A render that fails does not fail the call (docs/engine.md, "Rendering"): the in-process
        engine returns the state and only a later Render raises, so the reply carries
        the state and the error in ``render_error``."""
        try:
            render = await self._engine.render(state)
        except TrellisError as exc:
            step_reports.fill_reported_error(response.render_error, exc)
            render = RenderResult(actions=(), terminal=False)
        if no_match and not response.HasField("render_error"):
            render = with_no_match_notice(render)
        step = response.step
        convert.fill_step(step, StepResult(state, render))
        # The client carries the state: one too big to come back in a request is refused here.
        self._limits.check_step_message(step)
        if self._signer is not None:
            step.state.signature = self._signer.sign(state)
        room = self._limits.max_message_bytes - response.ByteSize()
        step_reports.fill_events(response.events, captured.events, captured.dropped, room)

    @guarded_unary
    async def Start(
        self, request: epb.EngineStartRequest, context: grpc.aio.ServicerContext
    ) -> epb.EngineStartResponse:
        self._limits.check_context_text(request.context_json, "context_json")
        ctx = convert.load_json_object(request.context_json, "context_json")
        with capturing() as captured:
            state = await self._engine.start(request.session_id, ctx)
        response = epb.EngineStartResponse()
        await self._step_out(response, state, captured)
        return response

    @guarded_unary
    async def Render(
        self, request: epb.EngineRenderRequest, context: grpc.aio.ServicerContext
    ) -> epb.EngineRenderResponse:
        render = await self._engine.render(self._state_in(request.state))
        response = epb.EngineRenderResponse(terminal=render.terminal, signals=render.signals)
        for action in render.actions:
            convert.fill_action(response.actions.add(), action)
        return response

    @guarded_unary
    async def Navigate(
        self, request: epb.EngineNavigateRequest, context: grpc.aio.ServicerContext
    ) -> epb.EngineNavigateResponse:
        state = self._state_in(request.state)
        value = convert.input_from_proto(request.input, self._limits.max_input_bytes)
        if isinstance(value, str):  # the engine's host sanitises (docs/engine.md, "Input")
            value = sanitize_input(value, self._limits.max_input_bytes)
        with capturing() as captured:
            new_state = await self._engine.navigate(state, value)
        response = epb.EngineNavigateResponse()
        await self._step_out(
            response, new_state, captured, no_match=matched_nothing(state, new_state, value)
        )
        return response

    @guarded_unary
    async def Signal(
        self, request: epb.EngineSignalRequest, context: grpc.aio.ServicerContext
    ) -> epb.EngineSignalResponse:
        state = self._state_in(request.state)
        with capturing() as captured:
            new_state = await self._engine.signal(state, request.signal)
        response = epb.EngineSignalResponse()
        await self._step_out(response, new_state, captured)
        return response

    @guarded_unary
    async def Inspect(
        self, request: epb.EngineInspectRequest, context: grpc.aio.ServicerContext
    ) -> epb.EngineInspectResponse:
        nodes = await self._engine.inspect()
        return epb.EngineInspectResponse(nodes=[convert.node_to_proto(n) for n in nodes])
