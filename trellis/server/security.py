"""Access control (TLS credentials are in trellis.api.transport, shared with clients).

* An optional bearer token: every call except health checks must carry
  ``authorization: Bearer <token>``. Tokens come from a file (one per line, so a
  new token can be added before the old one is removed) or TRELLIS_TOKEN.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis.api import error_table
from trellis.api.transport import read_pem
from trellis.errors import ConfigError, Unauthenticated

# Health stays open so that load balancers and orchestrators can probe without a secret.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def load_tokens(token_file: str = "", token: str = "") -> list[str]:
    """The accepted tokens: every non-empty line of ``token_file`` plus ``token``."""
    tokens: list[str] = []
    if token_file:
        text = read_pem(token_file, "token file").decode("utf-8", errors="replace")
        tokens.extend(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
        if not tokens:
            raise ConfigError(f"token file '{token_file}' holds no token")
    if token.strip():
        tokens.append(token.strip())
    return tokens


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ConfigError("token check enabled without any token")
        self._tokens = [t.encode() for t in tokens]

    def _valid(self, metadata: Sequence[tuple[str, Any]] | None) -> str:
        """"" when the call is allowed, else what is wrong with it."""
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if not values:
            return "missing authorization metadata (expected 'authorization: Bearer <token>')"
        value = values[0] if isinstance(values[0], str) else values[0].decode(errors="replace")
        scheme, _, presented = value.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return "authorization metadata is not 'Bearer <token>'"
        candidate = presented.strip().encode()
        # Compare against every token (no early exit) so timing does not tell which one nearly matched.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
        return "" if matched else "invalid bearer token"

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        if details.method.startswith(OPEN_METHOD_PREFIXES):
            return await continuation(details)
        problem = self._valid(details.invocation_metadata)
        handler = await continuation(details)
        if not problem or handler is None:
            return handler
        return _denying(handler, Unauthenticated(problem))


def _denying(handler: Any, exc: Unauthenticated) -> Any:
    code, message, status = error_table.status_for(exc)
    trailing = ((error_table.STATUS_DETAILS_KEY, status),)

    async def deny(request: Any, context: Any) -> Any:
        await context.abort(code, message, trailing_metadata=trailing)

    async def deny_stream(request: Any, context: Any) -> AsyncIterator[Any]:
        await context.abort(code, message, trailing_metadata=trailing)
        yield  # pragma: no cover - abort raises; this makes the function a generator

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
