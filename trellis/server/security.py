"""Transport security and access control.

* TLS / mutual TLS for the server (``server_credentials``) and for outgoing
  clients (``channel_credentials``, used by the remote adapters and SDKs).
* An optional bearer token: every call except health checks must carry
  ``authorization: Bearer <token>``. Tokens come from a file (one per line, so a
  new token can be added before the old one is removed) or TRELLIS_TOKEN.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis import rpc_errors
from trellis.errors import ConfigError, Unauthenticated

# Health stays open so that load balancers and orchestrators can probe without a secret.
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} '{path}': {exc.strerror}") from None


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> Any:
    """TLS credentials for the server; with ``client_ca_file``, clients must present a
    certificate signed by that CA (mutual TLS)."""
    if not cert_file or not key_file:
        raise ConfigError("TLS needs both a certificate (tls_cert) and a private key (tls_key)")
    pair = (_read(key_file, "TLS key"), _read(cert_file, "TLS certificate"))
    if client_ca_file:
        return grpc.ssl_server_credentials(
            [pair], root_certificates=_read(client_ca_file, "client CA"), require_client_auth=True
        )
    return grpc.ssl_server_credentials([pair])


def channel_credentials(ca_file: str = "", cert_file: str = "", key_file: str = "") -> Any:
    """TLS credentials for a client channel: ``ca_file`` to trust a private CA (else the
    system roots), ``cert_file``+``key_file`` to authenticate to a mutual-TLS server."""
    if bool(cert_file) != bool(key_file):
        raise ConfigError("a client certificate needs both cert_file and key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA certificate") if ca_file else None,
        private_key=_read(key_file, "client key") if key_file else None,
        certificate_chain=_read(cert_file, "client certificate") if cert_file else None,
    )


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token`` (for clients of a token-protected server)."""
    return (("authorization", f"Bearer {token}"),)


def load_tokens(token_file: str = "", token: str = "") -> list[str]:
    """The accepted tokens: every non-empty line of ``token_file`` plus ``token``."""
    tokens: list[str] = []
    if token_file:
        text = _read(token_file, "token file").decode("utf-8", errors="replace")
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
    code, message, status = rpc_errors.status_for(exc)
    trailing = ((rpc_errors.STATUS_DETAILS_KEY, status),)

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
