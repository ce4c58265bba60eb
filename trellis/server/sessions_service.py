"""The Sessions service: durable sessions over a session manager.

The manager (trellis.sessions.SessionManager, or anything with the methods of
trellis.ports.SessionsPort) owns the critical section: lock, load, step, dispatch the tools a
dispatcher serves, save, release. This layer only converts and validates.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis.api import MAX_STREAM_STEPS, convert, step_reports
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.errors import InvalidInput
from trellis.ports.sessions import SessionsPort
from trellis.server import page_tokens
from trellis.server.guards import Servicer, guarded_stream, guarded_unary
from trellis.server.lifecycle_capture import CapturedEvents, capturing
from trellis.server.limits import Limits
from trellis.server.observe import Observer
from trellis.server.step_stream import StepCall, StepStream
from trellis.server.watch_streams import WatchStreams

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
StepResponse = spb.SessionsStartResponse | spb.SessionsNavigateResponse | spb.SessionsSignalResponse


class SessionsService(Servicer, sessions_pb2_grpc.SessionsServicer):
    service_name = "Sessions"

    def __init__(
        self,
        sessions: SessionsPort,
        observer: Observer,
        limits: Limits,
        watch_streams: WatchStreams | None = None,
    ) -> None:
        super().__init__(observer, limits)
        self._sessions = sessions
        self._limits = limits
        self._watch_streams = watch_streams or WatchStreams()

    def _events_out(self, response: StepResponse, captured: CapturedEvents) -> None:
        """The step's lifecycle events, in what room the reply has left (up to their budget)."""
        room = self._limits.max_message_bytes - response.ByteSize()
        step_reports.fill_events(response.events, captured.events, captured.dropped, room)

    @guarded_unary
    async def Start(self, request: spb.SessionsStartRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._start(request)

    @guarded_unary
    async def Get(self, request: spb.SessionsGetRequest, context: grpc.aio.ServicerContext) -> Any:
        result = await self._sessions.get(request.session_id)
        response = spb.SessionsGetResponse()
        convert.fill_step(response.step, result)
        return response

    @guarded_unary
    async def Navigate(self, request: spb.SessionsNavigateRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._navigate(request)

    @guarded_unary
    async def Signal(self, request: spb.SessionsSignalRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._signal(request)

    async def Steps(
        self, requests: AsyncIterator[spb.SessionsStepsRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.SessionsStepsResponse]:
        calls: dict[str, StepCall] = {
            "start": self._start,
            "navigate": self._navigate,
            "signal": self._signal,
        }
        stream = StepStream(self, calls, context, MAX_STREAM_STEPS, self._limits.max_message_bytes)
        async for reply in stream.serve(requests):
            yield reply

    # --- the steps, for a unary call or a step stream -----------------------------------

    async def _start(self, request: spb.SessionsStartRequest) -> spb.SessionsStartResponse:
        self._limits.check_context_text(request.context_json, "context_json")
        initial = convert.load_json_object(request.context_json, "context_json")
        # The manager's step says whether it created the session: of simultaneous creators
        # exactly one did (the create is a write conditioned on the session not existing).
        with capturing() as captured:
            result = await self._sessions.start(request.session_id, initial, request_id=request.request_id)
        response = spb.SessionsStartResponse(created=result.created, replayed=result.replayed)
        convert.fill_step(response.step, result)
        self._events_out(response, captured)
        return response

    async def _navigate(self, request: spb.SessionsNavigateRequest) -> spb.SessionsNavigateResponse:
        value = convert.input_from_proto(request.input, self._limits.max_input_bytes)
        with capturing() as captured:
            result = await self._sessions.navigate(
                request.session_id,
                value,
                request_id=request.request_id,
                expected_revision=_expected_revision(request),
            )
        response = spb.SessionsNavigateResponse(replayed=result.replayed)
        convert.fill_step(response.step, result)
        self._events_out(response, captured)
        return response

    async def _signal(self, request: spb.SessionsSignalRequest) -> spb.SessionsSignalResponse:
        if not request.signal:
            raise InvalidInput("signal: must not be empty", field="signal")
        with capturing() as captured:
            result = await self._sessions.signal(
                request.session_id,
                request.signal,
                request_id=request.request_id,
                expected_revision=_expected_revision(request),
            )
        response = spb.SessionsSignalResponse(replayed=result.replayed)
        convert.fill_step(response.step, result)
        self._events_out(response, captured)
        return response

    @guarded_unary
    async def Delete(self, request: spb.SessionsDeleteRequest, context: grpc.aio.ServicerContext) -> Any:
        await self._sessions.delete(request.session_id)
        return spb.SessionsDeleteResponse()

    @guarded_unary
    async def List(self, request: spb.SessionsListRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.page_size < 0:
            raise InvalidInput(f"page_size: must not be negative, got {request.page_size}", field="page_size")
        # A server never returns an unbounded page: 0 means the default size.
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page = await self._sessions.list(size, page_tokens.unwrap(request.page_token))
        return spb.SessionsListResponse(
            session_ids=page.session_ids, next_page_token=page_tokens.wrap(page.next_page_token)
        )

    @guarded_stream
    async def Watch(
        self, request: spb.SessionsWatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.SessionsWatchResponse]:
        if request.start_revision < 0:
            raise InvalidInput(
                f"start_revision: must be 0 (from now) or a revision, got {request.start_revision}",
                field="start_revision",
            )
        with self._watch_streams.slot("Sessions.Watch"):
            # SessionNotFound (or WatchRevisionCompacted) comes with the first read.
            watch = self._sessions.watch_events(request.session_id, start_revision=request.start_revision)
            try:
                async for event in watch:
                    if event.diff is not None or request.allow_bookmarks:
                        yield convert.watch_response(event)
            finally:
                await watch.aclose()


def _expected_revision(request: spb.SessionsNavigateRequest | spb.SessionsSignalRequest) -> int | None:
    if not request.HasField("expected_revision"):
        return None
    if request.expected_revision < 0:
        raise InvalidInput(f"expected_revision: must not be negative, got {request.expected_revision}")
    return request.expected_revision
