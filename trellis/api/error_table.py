"""THE error table between trellis exceptions and gRPC statuses, both directions.

Servers turn an exception into a status code plus a google.rpc.Status detail
holding google.rpc.ErrorInfo(reason=exc.reason, domain="trellis.dev",
metadata=<the exception's fields>). Clients (the remote adapters) turn such a
status back into an instance of the same class with the same fields, which is
why a remote adapter passes the same contract suite as a local one.

Lookup walks the exception's class hierarchy, so a new subclass inherits its
parent's code until it is given its own row here.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]
import orjson
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from trellis import errors as e

DOMAIN = "trellis.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
DEADLINE_REASON = "DEADLINE_EXCEEDED"
INTERNAL_REASON = "INTERNAL"

C = grpc.StatusCode

CODES: dict[type[e.TrellisError], grpc.StatusCode] = {
    e.TrellisError: C.FAILED_PRECONDITION,
    # graph definition and loading: the server's graph is not usable as asked
    e.NodeLoadError: C.FAILED_PRECONDITION,
    e.NodeNotFound: C.NOT_FOUND,
    e.NodeDefinitionError: C.FAILED_PRECONDITION,
    e.GraphError: C.FAILED_PRECONDITION,
    e.WatchNotSupported: C.FAILED_PRECONDITION,
    # engine: the session is not in a state where this step makes sense
    e.ExecutionViolation: C.FAILED_PRECONDITION,
    e.ContextValidationError: C.FAILED_PRECONDITION,
    e.ContextTypeValidationError: C.FAILED_PRECONDITION,
    e.InvalidConfirmation: C.INVALID_ARGUMENT,
    e.ReservedNamespace: C.FAILED_PRECONDITION,
    e.ExpectedToolResult: C.FAILED_PRECONDITION,
    e.UnexpectedToolResult: C.FAILED_PRECONDITION,
    e.ToolResultMismatch: C.FAILED_PRECONDITION,
    e.UnhandledToolError: C.FAILED_PRECONDITION,
    e.UnhandledSignal: C.FAILED_PRECONDITION,
    e.SessionTerminated: C.FAILED_PRECONDITION,
    e.TemplateError: C.FAILED_PRECONDITION,
    e.ConditionError: C.FAILED_PRECONDITION,
    # what the client sent is wrong
    e.InvalidInput: C.INVALID_ARGUMENT,
    e.StateSignatureInvalid: C.INVALID_ARGUMENT,
    e.InvalidSessionId: C.INVALID_ARGUMENT,
    e.StateTooLarge: C.INVALID_ARGUMENT,
    e.StoreFull: C.RESOURCE_EXHAUSTED,
    e.SessionNotFound: C.NOT_FOUND,
    # concurrency: retry the whole step
    e.ConflictError: C.ABORTED,
    e.LockLost: C.ABORTED,
    # a watch's resume revision is no longer in the store's history: start over
    e.WatchRevisionCompacted: C.OUT_OF_RANGE,
    # infrastructure
    e.BackendUnavailable: C.UNAVAILABLE,
    e.DispatchError: C.UNAVAILABLE,
    e.ConfigError: C.FAILED_PRECONDITION,
    e.Unauthenticated: C.UNAUTHENTICATED,
    # a server-wide budget is used up: retry later
    e.TooManyWatchStreams: C.RESOURCE_EXHAUSTED,
}

# Fields of the exception classes carried in ErrorInfo.metadata (string values;
# lists as JSON text) so the client-side exception has them too.
_FIELDS = (
    "node_id",
    "session_id",
    "source",
    "field",
    "problem",
    "tool_name",
    "cause",
    "signal",
    "got",
    "pending",
    "missing_keys",
    "errors",
    "problems",
    "start_revision",
    "compact_revision",
)
_LIST_FIELDS = frozenset({"missing_keys", "errors", "problems"})
_INT_FIELDS = frozenset({"start_revision", "compact_revision"})


def code_for(exc: BaseException) -> grpc.StatusCode:
    """The status code of an exception: the nearest class in CODES, DEADLINE_EXCEEDED
    for timeouts, CANCELLED for cancellation, INTERNAL for anything else (a bug)."""
    if isinstance(exc, e.TrellisError):
        for cls in type(exc).__mro__:
            code = CODES.get(cls)
            if code is not None:
                return code
    if isinstance(exc, builtins.TimeoutError):
        return C.DEADLINE_EXCEEDED
    return C.INTERNAL


def reason_for(exc: BaseException) -> str:
    if isinstance(exc, e.TrellisError):
        return str(getattr(exc, "reason", e.TrellisError.reason))
    if isinstance(exc, builtins.TimeoutError):
        return DEADLINE_REASON
    return INTERNAL_REASON


# Error text travels in gRPC trailing metadata (twice: grpc-message, percent-encoded,
# so a non-ASCII byte costs three; and inside the status details), which clients
# cap at 8-16 KiB. A message echoing a huge client value would overflow it and
# reach the client as RESOURCE_EXHAUSTED without its reason, so messages and detail
# values are cut to these many UTF-8 bytes.
MAX_MESSAGE_BYTES = 1024
MAX_DETAIL_BYTES = 256


def _bounded(text: str, limit: int) -> str:
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return text
    kept = encoded[:limit].decode("utf-8", "ignore")
    return f"{kept}… ({len(encoded) - limit} more bytes)"


def message_for(exc: BaseException) -> str:
    if isinstance(exc, e.TrellisError):
        return _bounded(exc.message, MAX_MESSAGE_BYTES)
    if isinstance(exc, builtins.TimeoutError):
        return "the step did not finish before the caller's deadline"
    return "internal error"


def error_metadata(exc: BaseException) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in _FIELDS:
        value = getattr(exc, name, None)
        if value is None:
            continue
        if name in _LIST_FIELDS:
            items = [_bounded(str(item), MAX_DETAIL_BYTES) for item in value]
            # Keep whole items (the client parses this as a JSON list) within the budget.
            while len(items) > 1 and len(orjson.dumps(items)) > 4 * MAX_DETAIL_BYTES:
                items.pop()
            out[name] = orjson.dumps(items).decode()
        else:
            out[name] = _bounded(str(value), MAX_DETAIL_BYTES)
    return out


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, bytes]:
    """Code, message and the serialized google.rpc.Status for the trailing metadata."""
    code = code_for(exc)
    message = message_for(exc)
    info = error_details_pb2.ErrorInfo(reason=reason_for(exc), domain=DOMAIN, metadata=error_metadata(exc))
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return code, message, status.SerializeToString()


# --- the reverse direction (clients) ----------------------------------------------------


def _classes_by_reason() -> dict[str, type[e.TrellisError]]:
    found: dict[str, type[e.TrellisError]] = {}
    for cls in e.all_error_classes():
        found.setdefault(cls.reason, cls)
    return found


def error_info_from(details: bytes | None) -> error_details_pb2.ErrorInfo | None:
    """The trellis ErrorInfo inside serialized google.rpc.Status bytes, if any."""
    if not details:
        return None
    status = status_pb2.Status()
    try:
        status.ParseFromString(details)
    except Exception:  # a malformed detail is treated as absent
        return None
    for item in status.details:
        if item.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            item.Unpack(info)
            if info.domain == DOMAIN:
                return info
    return None


def _build(cls: type[e.TrellisError], message: str, metadata: Mapping[str, str]) -> e.TrellisError:
    # The classes have differing constructors; rebuild the instance field by field
    # so the client sees the server's message verbatim.
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.message = message
    for name in _FIELDS:
        if name not in metadata:
            continue
        raw = metadata[name]
        value: Any = raw
        if name in _LIST_FIELDS:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                value = [raw]
        elif name in _INT_FIELDS:
            value = int(raw) if raw.lstrip("-").isdigit() else 0
        setattr(exc, name, value)
    return exc


def error_from_status(code: grpc.StatusCode, message: str, details: bytes | None = None) -> BaseException:
    """The exception a local port would have raised for this status.

    With a trellis ErrorInfo: an instance of the class registered for its reason
    (or the nearest one for the code), fields restored. Without one (a proxy, a
    transport failure): UNAVAILABLE or CANCELLED → BackendUnavailable, DEADLINE_EXCEEDED →
    TimeoutError, anything else → TrellisError carrying the code in its message.
    """
    info = error_info_from(details)
    if info is not None:
        if info.reason == DEADLINE_REASON:
            return builtins.TimeoutError(message)
        cls = _classes_by_reason().get(info.reason)
        if cls is None:
            exc = _build(_fallback_class(code), message, info.metadata)
            exc.reason = info.reason  # keep the server's reason for callers that look at it
            return exc
        return _build(cls, message, info.metadata)
    if code == C.DEADLINE_EXCEEDED:
        return builtins.TimeoutError(message or "deadline exceeded")
    return _build(_fallback_class(code), f"{code.name}: {message}", {})


def _fallback_class(code: grpc.StatusCode) -> type[e.TrellisError]:
    # CANCELLED reaches a caller only when the other end (or a proxy) cut the call: a caller
    # that cancels its own call sees asyncio.CancelledError instead. A server stopping without
    # grace does that; like a broken connection, the call's outcome is unknown: unavailable.
    if code in (C.UNAVAILABLE, C.CANCELLED):
        return e.BackendUnavailable
    if code == C.UNAUTHENTICATED:
        return e.Unauthenticated
    if code == C.INVALID_ARGUMENT:
        return e.InvalidInput
    return e.TrellisError


def error_from_rpc_error(err: grpc.RpcError) -> BaseException:
    """``error_from_status`` for a caught grpc.RpcError / grpc.aio.AioRpcError."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    trailing_fn = getattr(err, "trailing_metadata", None)
    code = code_fn() if callable(code_fn) else C.UNKNOWN
    message = (details_fn() if callable(details_fn) else "") or ""
    trailing: Sequence[tuple[str, Any]] = (trailing_fn() if callable(trailing_fn) else None) or ()
    details: bytes | None = None
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            details = value
    return error_from_status(code, message, details)
