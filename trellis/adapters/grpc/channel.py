"""One client channel to a trellis server, shared by the remote adapters and the SDK.

What it adds to a plain ``grpc.aio`` channel:

* credentials: TLS with a private CA or the system roots, mutual TLS with a client
  certificate, a bearer token sent as ``authorization`` metadata on every call
  (metadata rather than call credentials so it also works on a plaintext loopback
  channel, e.g. behind a TLS-terminating sidecar);
* a default deadline for every unary call (``timeout``), overridable per call;
* keepalive pings, so that a long Watch stream notices a dead peer;
* retries with capped, jittered exponential backoff on UNAVAILABLE, for idempotent
  calls only (a Save may have been applied before the connection broke), and also on
  DEADLINE_EXCEEDED for calls a repeat cannot apply twice (a step with a request ID);
* metadata from a process-wide hook (``set_call_metadata``): the trace context of the
  current span when the server traces (trellis.server.tracing), so a sidecar's span
  joins the step's trace without this layer knowing about tracing;
* every failed call turned back into the trellis exception the server raised
  (``trellis.api.error_table``), so remote adapters behave like local ones.

Reconnecting is grpc's own business: a channel whose server went away reconnects
on the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trellis.api import error_table
from trellis.api.transport import (
    MAX_METADATA_BYTES,
    ChannelOptions,
    channel_credentials,
    parse_target,
)
from trellis.errors import BackendUnavailable

T = TypeVar("T")

MetadataHook = Callable[[], list[tuple[str, str]]]
_call_metadata: MetadataHook | None = None


def set_call_metadata(hook: MetadataHook | None) -> None:
    """Have every unary call of every RemoteChannel in this process also send what
    ``hook()`` returns at the time of the call (None: nothing more). One hook per
    process: the tracing of the server that sets it."""
    global _call_metadata
    _call_metadata = hook


def call_metadata_hook() -> MetadataHook | None:
    return _call_metadata

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED


def _credentials(options: ChannelOptions) -> Any:
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
            # A peer that restarts (a sidecar, a replica) is reached again within seconds,
            # not after grpc's default backoff of up to two minutes.
            ("grpc.max_reconnect_backoff_ms", 5000),
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
        retry_deadline: bool = False,
    ) -> T:
        """One unary call: ``deadline`` seconds (default: options.timeout) per attempt,
        the token, retries on UNAVAILABLE when ``idempotent`` (and on DEADLINE_EXCEEDED
        too when ``retry_deadline``: the request carries an ID, so a repeat of an attempt
        that was applied after all applies nothing), failures raised as trellis
        exceptions (TimeoutError for a passed deadline)."""
        attempts = 1 + (self.options.retries if idempotent else 0)
        retried = (UNAVAILABLE, DEADLINE_EXCEEDED) if retry_deadline else (UNAVAILABLE,)
        seconds = self._deadline(deadline)
        metadata = self.metadata
        if _call_metadata is not None:
            metadata = (*metadata, *_call_metadata())
        for attempt in range(attempts):
            try:
                return await method(request, timeout=seconds, metadata=metadata)
            except grpc.aio.AioRpcError as err:
                if err.code() in retried and attempt + 1 < attempts:
                    await asyncio.sleep(self.options.backoff(attempt))
                    continue
                raise self.error(err) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def error(self, err: grpc.RpcError) -> BaseException:
        exc = error_table.error_from_rpc_error(err)
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
        if key == error_table.STATUS_DETAILS_KEY and error_table.error_info_from(value) is not None:
            return True
    return False
