"""Running a gRPC method of this process for an HTTP caller: the same servicers
behind the same interceptors (draining gate, bearer token, malformed requests)
as the gRPC listener, so auth, errors and limits cannot drift apart.

``PublicMethods`` collects the method handlers the servicers register (the
generated ``add_*Servicer_to_server`` functions take anything with the two
registration methods) and runs a call through the interceptor chain the way
grpc.aio does: each interceptor gets the call details and a continuation, the
last continuation looks the method up. ``HttpCallContext`` is the part of
``grpc.aio.ServicerContext`` the servicers and interceptors use.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis.api import error_table
from trellis.server.http.protocol import CallError


@dataclass(frozen=True, slots=True)
class CallDetails:
    """grpc.HandlerCallDetails for an HTTP call."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class HttpCallContext:
    """What the servicers need of a ServicerContext. ``abort`` raises grpc.aio.AbortError
    as grpc.aio's does, so the guards treat an HTTP call exactly like a gRPC one."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], timeout: float | None, peer: str) -> None:
        self._metadata = metadata
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._peer = peer
        self.code = grpc.StatusCode.OK
        self.details = ""
        self.trailing_metadata: tuple[tuple[str, Any], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        return self._peer

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self.trailing_metadata = tuple(metadata)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, Any]] = ()
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing_metadata)
        raise grpc.aio.AbortError()

    def error(self) -> CallError:
        """The error the call ended with (after an AbortError, or a code set by hand)."""
        status = b""
        for key, value in self.trailing_metadata:
            if key == error_table.STATUS_DETAILS_KEY and isinstance(value, bytes):
                status = value
        return CallError(self.code, self.details, status)


def error_for(exc: BaseException) -> CallError:
    """A CallError from an exception, through the one error table."""
    code, message, status = error_table.status_for(exc)
    return CallError(code, message, status)


Interceptor = Any  # grpc.aio.ServerInterceptor


class PublicMethods:
    """The method handlers of the public services, and the interceptors around them."""

    def __init__(self, interceptors: Sequence[Interceptor]) -> None:
        self._interceptors = list(interceptors)
        self._handlers: dict[str, Any] = {}  # "/pkg.Service/Method" -> RpcMethodHandler
        self._grpc_only: set[str] = set()  # client streams: HTTP/1.1 has no full duplex

    # --- what add_*Servicer_to_server calls --------------------------------------------

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        """Taken via add_registered_method_handlers, which every generated module calls too."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for method, handler in handlers.items():
            if handler.request_streaming:
                self._grpc_only.add(f"/{service}/{method}")
            else:
                self._handlers[f"/{service}/{method}"] = handler

    # --- lookup and calls -------------------------------------------------------------------

    def knows(self, method: str) -> bool:
        return method in self._handlers

    def grpc_only(self, method: str) -> bool:
        """A method of the services that only gRPC serves (Sessions.Steps)."""
        return method in self._grpc_only

    def is_streaming(self, method: str) -> bool:
        return bool(self._handlers[method].response_streaming)

    def request_class(self, method: str) -> Any:
        """The request message class (its deserializer is the class's FromString)."""
        return self._handlers[method].request_deserializer.__self__

    async def handler(self, details: CallDetails) -> Any:
        """The handler as the interceptors return it for this call."""

        async def lookup(call: CallDetails) -> Any:
            return self._handlers.get(call.method)

        continuation: Callable[[CallDetails], Awaitable[Any]] = lookup
        for interceptor in reversed(self._interceptors):
            continuation = _chained(interceptor, continuation)
        return await continuation(details)

    async def unary(self, details: CallDetails, request_bytes: bytes, context: HttpCallContext) -> Any:
        """The reply of a unary method; raises grpc.aio.AbortError (the error is in ``context``)."""
        handler = await self.handler(details)
        request = handler.request_deserializer(request_bytes)
        # The guards bound the call by context.time_remaining(), as for a gRPC caller.
        return await handler.unary_unary(request, context)

    async def stream(
        self, details: CallDetails, request_bytes: bytes, context: HttpCallContext
    ) -> AsyncGenerator[Any, None]:
        """The replies of a server-streaming method, as they come."""
        handler = await self.handler(details)
        request = handler.request_deserializer(request_bytes)
        replies = handler.unary_stream(request, context)
        try:
            while True:
                remaining = context.time_remaining()
                try:
                    if remaining is None:
                        reply = await anext(replies)
                    else:
                        async with asyncio.timeout(remaining):
                            reply = await anext(replies)
                except StopAsyncIteration:
                    return
                yield reply
        finally:
            await replies.aclose()


def _chained(interceptor: Interceptor, then: Callable[[CallDetails], Awaitable[Any]]) -> Any:
    async def call(details: CallDetails) -> Any:
        return await interceptor.intercept_service(then, details)

    return call
