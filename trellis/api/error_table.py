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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Row:
    """One reason of the catalog: its status code, the ErrorInfo.metadata keys it may
    carry (besides ``session_id``, see SESSION_KEY) and what it means to a caller."""

    code: grpc.StatusCode
    keys: tuple[str, ...]
    meaning: str


# THE table. docs/errors.md is generated from it (python -m trellis.api.error_catalog);
# scripts/check-protos fails when the two differ.
ROWS: dict[type[e.TrellisError], Row] = {
    e.TrellisError: Row(C.FAILED_PRECONDITION, (), "An engine error without a more specific reason."),
    # graph definition and loading: the server's graph is not usable as asked
    e.NodeLoadError: Row(C.FAILED_PRECONDITION, ("node_id",), "A node of the graph cannot be loaded."),
    e.NodeNotFound: Row(C.NOT_FOUND, ("node_id",), "The graph has no node with this ID."),
    e.NodeDefinitionError: Row(
        C.FAILED_PRECONDITION,
        ("node_id", "source", "field", "problem"),
        "A node's definition is invalid: `source` is its file or key, `field` the node field at fault.",
    ),
    e.GraphError: Row(C.FAILED_PRECONDITION, ("problems",), "The graph as a whole is invalid."),
    e.WatchNotSupported: Row(C.FAILED_PRECONDITION, (), "This server's store or loader cannot watch."),
    # engine: the session is not in a state where this step makes sense
    e.ExecutionViolation: Row(
        C.FAILED_PRECONDITION, ("node_id",), "The node cannot run as defined (e.g. it both calls a tool and waits)."
    ),
    e.ContextValidationError: Row(
        C.FAILED_PRECONDITION, ("node_id", "missing_keys"), "The node's `required_context` keys are missing."
    ),
    e.ContextTypeValidationError: Row(
        C.FAILED_PRECONDITION, ("node_id", "errors"), "Context values do not match the node's `context_schema`."
    ),
    e.InvalidConfirmation: Row(
        C.INVALID_ARGUMENT,
        ("node_id", "got", "field"),
        "A confirm node got something other than y/n/yes/no; the state is unchanged, ask again.",
    ),
    e.ReservedNamespace: Row(C.FAILED_PRECONDITION, ("node_id",), "A node tried to save into the reserved `sys` key."),
    e.ExpectedToolResult: Row(
        C.FAILED_PRECONDITION,
        ("node_id", "pending"),
        "A tool call is pending (`pending`): only `input.tool_result` (or a signal) is accepted.",
    ),
    e.UnexpectedToolResult: Row(
        C.FAILED_PRECONDITION, ("node_id", "got"), "A tool result arrived while no tool call is pending."
    ),
    e.ToolResultMismatch: Row(
        C.FAILED_PRECONDITION, ("got", "pending"), "The tool result's ID is not the pending call's (`pending`)."
    ),
    e.UnhandledToolError: Row(
        C.FAILED_PRECONDITION,
        ("node_id", "tool_name", "cause"),
        "A tool failed and its node has no `on_error`; the session is unchanged.",
    ),
    e.UnhandledSignal: Row(
        C.FAILED_PRECONDITION, ("signal", "node_id"), "Neither the current node nor the entry node handles the signal."
    ),
    e.SessionTerminated: Row(
        C.FAILED_PRECONDITION,
        ("node_id",),
        "Input sent to a terminated session; start a new one, or send a signal the last node handles.",
    ),
    e.TemplateError: Row(C.FAILED_PRECONDITION, (), "A node's template failed to parse or to render."),
    e.ConditionError: Row(C.FAILED_PRECONDITION, (), "A transition condition does not compile."),
    e.ConditionOverBudget: Row(
        C.FAILED_PRECONDITION, (), "A condition would cost more than the server's max_condition_cost."
    ),
    # what the client sent is wrong
    e.InvalidInput: Row(
        C.INVALID_ARGUMENT,
        ("field",),
        "A request field is malformed or over a limit; `field` (and the BadRequest detail) names it.",
    ),
    e.StateSignatureInvalid: Row(
        C.INVALID_ARGUMENT, ("field",), "A client-carried state's signature is missing or does not match."
    ),
    e.InvalidSessionId: Row(C.INVALID_ARGUMENT, ("field",), "The session ID is empty, too long or has a bad character."),
    e.RequestIdReused: Row(
        C.INVALID_ARGUMENT,
        ("request_id",),
        "This request_id was already used for a different request on this session; use a new ID.",
    ),
    e.StateTooLarge: Row(C.INVALID_ARGUMENT, (), "The state would exceed the store's size limit."),
    e.StoreFull: Row(C.RESOURCE_EXHAUSTED, (), "The store is at its quota of sessions or bytes."),
    e.SessionNotFound: Row(C.NOT_FOUND, (), "No session with this ID."),
    # concurrency: retry the whole step
    e.ConflictError: Row(
        C.ABORTED,
        ("expected_revision", "stored_revision"),
        "Someone else saved the session first (revision 0 = absent); retry the whole step.",
    ),
    # AIP-154: a request whose etag (here: expected_revision) is not current is ABORTED
    e.RevisionMismatch: Row(
        C.ABORTED,
        ("expected_revision", "actual_revision"),
        "The session is not at the request's expected_revision; read it again before deciding.",
    ),
    e.LockLost: Row(C.ABORTED, (), "The step's session lock expired or was taken over; retry the step."),
    # a watch's resume revision is no longer in the store's history: start over
    e.WatchRevisionCompacted: Row(
        C.OUT_OF_RANGE,
        ("start_revision", "compact_revision"),
        "A Sessions.Watch start_revision whose changes are no longer kept; Get the session and "
        "watch from its revision + 1.",
    ),
    # infrastructure
    e.BackendUnavailable: Row(C.UNAVAILABLE, (), "A store, loader or dispatcher cannot be reached, or the server is stopping."),
    e.DispatchError: Row(C.UNAVAILABLE, (), "A dispatcher could not run a tool call at all."),
    e.ConfigError: Row(C.FAILED_PRECONDITION, (), "The server's configuration is invalid."),
    e.Unauthenticated: Row(C.UNAUTHENTICATED, (), "No valid bearer token (`authorization: Bearer <token>`)."),
    # a server-wide budget is used up: retry later
    e.TooManyWatchStreams: Row(C.RESOURCE_EXHAUSTED, (), "The server holds as many watch streams as it allows."),
    e.RequestTooLarge: Row(
        C.RESOURCE_EXHAUSTED, (), "An HTTP request (body, headers or streams) is over the listener's limits."
    ),
}

# Reasons that are no exception class: the step outlived the caller's deadline, or a bug.
EXTRA_ROWS: dict[str, Row] = {
    DEADLINE_REASON: Row(C.DEADLINE_EXCEEDED, (), "The step did not finish before the caller's deadline."),
    INTERNAL_REASON: Row(C.INTERNAL, (), "A bug in the server; the message says nothing more (the log does)."),
}

CODES: dict[type[e.TrellisError], grpc.StatusCode] = {cls: row.code for cls, row in ROWS.items()}

# Every error of a call that names a session (request.session_id, or the session ID of
# request.state) carries that ID under this key, whatever its reason.
SESSION_KEY = "session_id"

# Fields of the exception classes carried in ErrorInfo.metadata (string values;
# lists as JSON text, integers as decimal text) so the client-side exception has them too.
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
    "expected_revision",
    "stored_revision",
    "missing_keys",
    "errors",
    "problems",
    "request_id",
    "expected_revision",
    "actual_revision",
    "start_revision",
    "compact_revision",
)
LIST_KEYS = frozenset({"missing_keys", "errors", "problems"})
# What each metadata key holds (docs/errors.md shows this too).
KEY_MEANINGS: dict[str, str] = {
    "session_id": "the session the call named (every reason, whenever the request names one)",
    "node_id": "the node at fault, or the session's current node",
    "source": "where the node came from (file path or etcd key)",
    "field": "a request field as a dotted path (`input.tool_result.id`), or for NODE_INVALID the node's field",
    "problem": "what is wrong with that node field",
    "tool_name": "the tool that failed",
    "cause": "the tool's error text",
    "signal": "the signal sent",
    "got": "the value or ID the caller sent",
    "pending": "the ID of the pending tool call",
    "expected_revision": "the revision the step loaded or the request expected, decimal; 0 = absent",
    "actual_revision": "the session's revision when an expected_revision did not match, decimal",
    "request_id": "the request ID the call carried",
    "stored_revision": "the revision in the store, decimal; 0 = the session does not exist",
    "missing_keys": "the context keys that are missing",
    "errors": "one text per context value of the wrong type",
    "problems": "one text per graph problem",
    "start_revision": "the revision a watch asked to resume from, decimal",
    "compact_revision": "the oldest revision the store still has the changes from, decimal",
}
INT_KEYS = frozenset({"expected_revision", "stored_revision", "actual_revision", "start_revision", "compact_revision"})


def row_for(exc: BaseException) -> Row:
    """The catalog row of an exception: its nearest class in ROWS, or an EXTRA_ROWS entry."""
    if isinstance(exc, e.TrellisError):
        for cls in type(exc).__mro__:
            row = ROWS.get(cls)
            if row is not None:
                return row
    return EXTRA_ROWS[reason_for(exc)]


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


def error_metadata(exc: BaseException, session_id: str = "") -> dict[str, str]:
    out: dict[str, str] = {SESSION_KEY: _bounded(session_id, MAX_DETAIL_BYTES)} if session_id else {}
    for name in _FIELDS:
        value = getattr(exc, name, None)
        if value is None:
            continue
        if name in LIST_KEYS:
            items = [_bounded(str(item), MAX_DETAIL_BYTES) for item in value]
            # Keep whole items (the client parses this as a JSON list) within the budget.
            while len(items) > 1 and len(orjson.dumps(items)) > 4 * MAX_DETAIL_BYTES:
                items.pop()
            out[name] = orjson.dumps(items).decode()
        else:
            out[name] = _bounded(str(value), MAX_DETAIL_BYTES)
    return out


def status_for(exc: BaseException, session_id: str = "") -> tuple[grpc.StatusCode, str, bytes]:
    """Code, message and the serialized google.rpc.Status for the trailing metadata.

    ``session_id`` is the session the call named; the exception's own wins when it has one.
    The details hold the ErrorInfo and, for an INVALID_ARGUMENT whose field is known, a
    google.rpc.BadRequest with one field violation naming that request field."""
    code = code_for(exc)
    message = message_for(exc)
    metadata = error_metadata(exc, session_id)
    info = error_details_pb2.ErrorInfo(reason=reason_for(exc), domain=DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    field = metadata.get("field")
    if code == C.INVALID_ARGUMENT and field:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=message, reason=info.reason)
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
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
        if name in LIST_KEYS:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                value = [raw]
        elif name in INT_KEYS:
            value = int(raw) if raw.lstrip("-").isdigit() else raw
        setattr(exc, name, value)
    return exc


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a google.rpc.Code number (UNKNOWN for one gRPC lacks)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


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
