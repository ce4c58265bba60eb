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

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis.errors import InvalidInput
from trellis.server.guards import abort_for
from trellis.server.handlers import WrappedOnce, guard_handler

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


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._wrapped = WrappedOnce()

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return self._wrapped.get(details.method, handler, _refusing_malformed)


def _refusing_malformed(method: str, handler: Any) -> Any:
    async def refuse_malformed(request: Any, context: Any) -> None:
        if isinstance(request, _Malformed):
            LOG.debug("refused a malformed request to %s: %s", method, request.problem)
            await abort_for(context, InvalidInput(request.problem))

    tolerant = _tolerant(handler.request_deserializer)
    return guard_handler(handler, refuse_malformed, request_deserializer=tolerant)
