"""Wrapping a grpc.aio method handler so a check runs before the servicer does: the
one way the server's interceptors (draining, malformed requests) refuse a call."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import grpc  # type: ignore[import-untyped]

Guard = Callable[[Any, Any], Awaitable[None]]
"""``guard(request, context)``: returns to let the call run, aborts the context to refuse it."""


class WrappedOnce:
    """An interceptor's wrapped handlers, made once per method: grpc.aio asks every
    interceptor for the handler of every call, and building the wrapper anew each
    time is a measurable part of a unary call's cost. Reused while the inner handler
    is the same object (it is, for a registered method)."""

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[Any, Any]] = {}

    def get(self, method: str, handler: Any, wrap: Callable[[str, Any], Any]) -> Any:
        """``wrap(method, handler)``, made the first time (and again if ``handler`` changed)."""
        cached = self._by_method.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap(method, handler)
        self._by_method[method] = (handler, wrapped)
        return wrapped


def guard_handler(
    handler: Any,
    guard: Guard,
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
    unary_scope: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
) -> Any:
    """``handler`` with ``guard`` run first (on every request of a bidirectional stream).
    ``request_deserializer`` replaces the handler's; ``unary_scope`` is entered around
    each unary call once it is let through. Client-only streams and handlers that are
    not coroutines are returned as they are: wrapping them would change how grpc.aio
    runs them."""
    if handler is None:
        return handler
    kwargs = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming:
        bidi = handler.stream_stream
        if not handler.response_streaming or not inspect.isasyncgenfunction(bidi):
            return handler

        async def guarded(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for request in requests:
                await guard(request, context)
                yield request

        async def stream_stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for item in bidi(guarded(requests, context), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
    if handler.response_streaming:
        stream = handler.unary_stream
        if not inspect.isasyncgenfunction(stream):
            return handler

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await guard(request, context)
            async for item in stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
    unary = handler.unary_unary
    if not inspect.iscoroutinefunction(unary):
        return handler
    scope = unary_scope or nullcontext

    async def unary_unary(request: Any, context: Any) -> Any:
        await guard(request, context)
        async with scope():
            return await unary(request, context)

    return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
