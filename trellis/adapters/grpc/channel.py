"""One client channel to a trellis server, shared by the remote adapters and the SDK.

What it adds to a plain ``grpc.aio`` channel:

* credentials: TLS with a private CA or the system roots, mutual TLS with a client
  certificate, a bearer token sent as ``authorization`` metadata on every call
  (metadata rather than call credentials so it also works on a plaintext loopback
  channel, e.g. behind a TLS-terminating sidecar);
* a default deadline for every unary call (``timeout``), overridable per call;
* keepalive pings, so that a long Watch stream notices a dead peer;
* retries with capped exponential backoff on UNAVAILABLE, for idempotent calls only
  (a Save or a Sessions.Navigate may have been applied before the connection broke);
* every failed call turned back into the trellis exception the server raised
  (``trellis.rpc_errors``), so remote adapters behave like local ones.

Reconnecting is grpc's own business: a channel whose server went away reconnects
on the next call.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trellis import rpc_errors
from trellis.errors import BackendUnavailable, ConfigError
from trellis.values import parse_duration

T = TypeVar("T")

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_METADATA_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """How to reach a server. Every field has a usable default for a plaintext loopback server."""

    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    token: str = ""
    timeout: float = 30.0
    """Default deadline of a unary call, in seconds (0 = none)."""
    retries: int = 4
    """Extra attempts of an idempotent call that failed with UNAVAILABLE."""
    backoff_base: float = 0.05
    backoff_cap: float = 2.0
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    def with_token(self, token: str) -> ChannelOptions:
        return replace(self, token=token)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): exponential, capped, jittered."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2**attempt))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


_BOOL = {
    "1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False
}


def parse_target(target: str, base: ChannelOptions | None = None) -> tuple[str, ChannelOptions]:
    """``HOST:PORT[?key=value&...]`` → the address and its options.

    Keys: ``tls`` (1/0), ``ca``, ``cert``, ``key`` (PEM files; any of them implies
    TLS), ``token_file`` (a file whose first line is the bearer token), ``timeout``
    (a duration, e.g. ``5s``), ``retries``. Raises ConfigError naming the bad key.
    """
    address, _, query = target.partition("?")
    address = address.rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"grpc target {target!r} is not HOST:PORT (e.g. grpc://127.0.0.1:50051)")
    options = base or ChannelOptions()
    changes: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key == "tls":
            if value.lower() not in _BOOL:
                raise ConfigError(f"grpc target {target!r}: tls must be 1 or 0, got {value!r}")
            changes["tls"] = _BOOL[value.lower()]
        elif key in ("ca", "cert", "key"):
            changes[f"{key}_file"] = value
            changes.setdefault("tls", True)
        elif key == "token_file":
            changes["token"] = _read_token(value, target)
        elif key == "timeout":
            try:
                changes["timeout"] = parse_duration(value)
            except ValueError:
                raise ConfigError(f"grpc target {target!r}: timeout {value!r} is not a duration") from None
        elif key == "retries":
            if not value.isdigit():
                raise ConfigError(f"grpc target {target!r}: retries must be a number, got {value!r}")
            changes["retries"] = int(value)
        elif key != "tools":  # tools= belongs to the dispatcher factory
            raise ConfigError(
                f"grpc target {target!r}: unknown option {key!r} "
                "(known: tls, ca, cert, key, token_file, timeout, retries, tools)"
            )
    return address, replace(options, **changes)


def _read_token(path: str, target: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise ConfigError(
            f"grpc target {target!r}: cannot read token file {path!r}: {exc.strerror}"
        ) from None
    if not lines:
        raise ConfigError(f"grpc target {target!r}: token file {path!r} holds no token")
    return lines[0]


def _credentials(options: ChannelOptions) -> Any:
    from trellis.server.security import channel_credentials

    return channel_credentials(options.ca_file, options.cert_file, options.key_file)


class RemoteChannel:
    """A ``grpc.aio`` channel plus the call policy above. Create it inside a running loop."""

    def __init__(self, address: str, options: ChannelOptions | None = None) -> None:
        self.address = address
        self.options = options = options or ChannelOptions()
        channel_options = [
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_send_message_length", options.max_message_bytes),
            ("grpc.keepalive_time_ms", int(options.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(options.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # Error statuses carry their ErrorInfo in trailing metadata; one that echoes a long
            # input must still arrive as the server's error, not as RESOURCE_EXHAUSTED.
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            # grpc's own retry layer is off: retries happen in ``call`` where we know
            # which methods are idempotent.
            ("grpc.enable_retries", 0),
        ]
        if options.tls or options.ca_file or options.cert_file:
            self.channel = grpc.aio.secure_channel(address, _credentials(options), options=channel_options)
        else:
            self.channel = grpc.aio.insecure_channel(address, options=channel_options)
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {options.token}"),) if options.token else ()
        )
        self._health = health_pb2_grpc.HealthStub(self.channel)

    @classmethod
    def from_target(cls, target: str, base: ChannelOptions | None = None) -> RemoteChannel:
        """From ``HOST:PORT[?options]`` (a leading ``grpc://`` is accepted)."""
        if target.startswith("grpc://"):
            target = target[len("grpc://"):]
        address, options = parse_target(target, base)
        return cls(address, options)

    def _deadline(self, seconds: float | None) -> float | None:
        value = self.options.timeout if seconds is None else seconds
        return value if value and value > 0 else None

    async def call(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        *,
        idempotent: bool,
        deadline: float | None = None,
    ) -> T:
        """One unary call: ``deadline`` seconds (default: options.timeout), the token,
        retries on UNAVAILABLE when ``idempotent``, failures raised as trellis
        exceptions (TimeoutError for a passed deadline)."""
        attempts = 1 + (self.options.retries if idempotent else 0)
        seconds = self._deadline(deadline)
        for attempt in range(attempts):
            try:
                return await method(request, timeout=seconds, metadata=self.metadata)
            except grpc.aio.AioRpcError as err:
                if err.code() == UNAVAILABLE and attempt + 1 < attempts:
                    await asyncio.sleep(self.options.backoff(attempt))
                    continue
                raise self.error(err) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def error(self, err: grpc.RpcError) -> BaseException:
        exc = rpc_errors.error_from_rpc_error(err)
        if isinstance(exc, BackendUnavailable) and err.code() == UNAVAILABLE and not _has_trellis_detail(err):
            # A transport failure, not the server's own verdict: say which server.
            exc.message = f"trellis server {self.address} unavailable: {err.details() or 'no answer'}"
            exc.args = (exc.message,)
        return exc

    async def probe(self) -> None:
        """Raise BackendUnavailable unless the server answers its health check with SERVING."""
        try:
            reply = await self.call(
                self._health.Check, health_pb2.HealthCheckRequest(service=""), idempotent=False, deadline=5.0
            )
        except TimeoutError:
            raise BackendUnavailable(f"trellis server {self.address}: health check timed out") from None
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise BackendUnavailable(f"trellis server {self.address} is not serving")

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> RemoteChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _has_trellis_detail(err: grpc.RpcError) -> bool:
    trailing: Any = err.trailing_metadata() if callable(getattr(err, "trailing_metadata", None)) else None
    for key, value in trailing or ():
        if key == rpc_errors.STATUS_DETAILS_KEY and rpc_errors.error_info_from(value) is not None:
            return True
    return False
