"""Graceful shutdown without cancelled calls.

grpc.aio's own graceful stop races with calls that arrive as it begins: its
serving loop stops taking calls from gRPC core at once, and a call core had
already matched but the loop had not yet picked up is dropped, then cancelled
when the grace period ends (the client sees CANCELLED, and the stop waits the
whole grace). So the server stops in two phases:

1. ``close``: every new call is refused by this interceptor with UNAVAILABLE
   (reason BACKEND_UNAVAILABLE, "shutting down"), which clients treat as
   retryable, while the unary calls already running go on; ``wait_idle``
   returns once they are all done (or the grace period is over).
2. Only then is gRPC stopped; what is left are streams (a Watch never ends by
   itself) and refusals under way.

A step stream (Sessions.Steps) counts as running while it is open. On ``close``
it reads no further request: its running steps are answered, then it ends with
the same UNAVAILABLE, so the client resends what was left on another replica.

Health checks pass through so probes see NOT_SERVING during phase 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis.errors import BackendUnavailable
from trellis.server.guards import abort_for
from trellis.server.handlers import WrappedOnce, guard_handler

_OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_SHUTTING_DOWN = BackendUnavailable("the trellis server is shutting down; retry (another replica, or later)")


class _Ended:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class DrainingGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._closing = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open_streams: set[Callable[[], None]] = set()
        self._wrapped = WrappedOnce()

    @property
    def in_flight(self) -> int:
        """Unary calls running now (refused ones are not counted)."""
        return self._in_flight

    def close(self) -> None:
        """Refuse every call from now on (health checks excepted); step streams stop
        reading."""
        self._closing = True
        for stop in list(self._open_streams):
            stop()

    async def wait_idle(self, grace: float) -> bool:
        """Wait until no unary call is running; False when ``grace`` seconds passed first."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _refuse_when_closing(self, request: Any, context: Any) -> None:
        if self._closing:
            await abort_for(context, _SHUTTING_DOWN)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN):
            return handler
        return self._wrapped.get(details.method, handler, self._wrap)

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.request_streaming and handler.response_streaming:
            return self._bidi(handler)
        return guard_handler(handler, self._refuse_when_closing, unary_scope=self._running)

    def _bidi(self, handler: Any) -> Any:
        inner = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            await self._refuse_when_closing(None, context)
            # The requests pass through a queue a pump fills, so that close() can end
            # them at once: the stream then answers what runs and ends.
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
            done = object()

            async def pump() -> None:
                try:
                    async for request in requests:
                        await queue.put(request)
                except Exception as exc:  # e.g. a malformed request's abort: the stream's end
                    await queue.put(_Ended(exc))
                else:
                    await queue.put(done)

            def stop() -> None:
                pumping.cancel()
                while not queue.empty():
                    queue.get_nowait()  # read but not begun: the client resends it
                queue.put_nowait(done)

            async def until_closed() -> AsyncIterator[Any]:
                while (request := await queue.get()) is not done:
                    if isinstance(request, _Ended):
                        raise request.error
                    yield request

            pumping = asyncio.create_task(pump())
            self._open_streams.add(stop)
            try:
                async with self._running():
                    async for reply in inner(until_closed(), context):
                        yield reply
            finally:
                self._open_streams.discard(stop)
                pumping.cancel()
            if self._closing:
                await abort_for(context, _SHUTTING_DOWN)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
