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

Health checks pass through so probes see NOT_SERVING during phase 1.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis.api import error_table
from trellis.errors import BackendUnavailable

_OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class DrainingGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._closing = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Unary calls running now (refused ones are not counted)."""
        return self._in_flight

    def close(self) -> None:
        """Refuse every call from now on (health checks excepted)."""
        self._closing = True

    async def wait_idle(self, grace: float) -> bool:
        """Wait until no unary call is running; False when ``grace`` seconds passed first."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _refuse(self, context: Any) -> None:
        refusal = BackendUnavailable("the trellis server is shutting down; retry (another replica, or later)")
        code, message, status = error_table.status_for(refusal)
        await context.abort(code, message, trailing_metadata=((error_table.STATUS_DETAILS_KEY, status),))

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or details.method.startswith(_OPEN):
            return handler
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.response_streaming:
            stream = handler.unary_stream
            if not inspect.isasyncgenfunction(stream):
                return handler

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                if self._closing:
                    await self._refuse(context)
                async for item in stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        unary = handler.unary_unary
        if not inspect.iscoroutinefunction(unary):
            return handler

        async def unary_unary(request: Any, context: Any) -> Any:
            if self._closing:
                await self._refuse(context)
            self._enter()
            try:
                return await unary(request, context)
            finally:
                self._leave()

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
