"""Requests that are not valid protobuf get INVALID_ARGUMENT, not UNKNOWN.

grpc.aio deserialises a request before any servicer code runs; when the bytes
do not parse (random bytes, invalid UTF-8 in a string field) it answers
UNKNOWN and logs a traceback at ERROR, one per request, so a client can fill
the server's log at will. This interceptor wraps every handler's deserialiser:
a request that does not parse becomes a marker, and the handler answers it with
INVALID_ARGUMENT (reason INVALID_INPUT) naming the message type, logged once at
debug level.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis.api import error_table
from trellis.errors import InvalidInput

LOG = logging.getLogger("trellis.server")


class _Malformed:
    """Stands in for a request that did not parse."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _type_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "") or "request")


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    what = _type_name(deserializer)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, UnicodeDecodeError, whatever the runtime raises
            reason = " ".join(str(exc).split()) or type(exc).__name__
            return _Malformed(f"the request is not a valid {what} message ({len(data)} bytes): {reason}")

    return deserialize


async def _refuse(context: Any, method: str, request: _Malformed) -> None:
    LOG.debug("refused a malformed request to %s: %s", method, request.problem)
    code, message, status = error_table.status_for(InvalidInput(request.problem))
    await context.abort(code, message, trailing_metadata=((error_table.STATUS_DETAILS_KEY, status),))


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        # Client streams (only reflection has one) and handlers that are not coroutines are left
        # as they are: wrapping them would change how grpc.aio runs them.
        if handler is None or handler.request_deserializer is None or handler.request_streaming:
            return handler
        method = details.method
        kwargs = {
            "request_deserializer": _tolerant(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }
        if handler.response_streaming:
            stream = handler.unary_stream
            if not inspect.isasyncgenfunction(stream):
                return handler

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                if isinstance(request, _Malformed):
                    await _refuse(context, method, request)
                async for item in stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        unary = handler.unary_unary
        if not inspect.iscoroutinefunction(unary):
            return handler

        async def unary_unary(request: Any, context: Any) -> Any:
            if isinstance(request, _Malformed):
                await _refuse(context, method, request)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
