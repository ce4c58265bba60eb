"""The error catalogue (docs/errors.md) as one exception tree.

Every error carries ``reason``: a stable, machine-readable upper-case code that
the gRPC layer puts in google.rpc.ErrorInfo and remote adapters map back to the
same class (see ``error_for_reason``). Messages name what was wrong and where.
"""

from __future__ import annotations

from collections.abc import Sequence


class TrellisError(Exception):
    reason = "TRELLIS_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- graph definition and loading -------------------------------------------------


class NodeLoadError(TrellisError):
    """A node is missing or cannot be parsed."""

    reason = "NODE_LOAD_FAILED"

    def __init__(self, node_id: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id


class NodeNotFound(NodeLoadError):
    reason = "NODE_NOT_FOUND"

    def __init__(self, node_id: str, message: str = "") -> None:
        super().__init__(node_id, message or f"node {node_id!r} not found")


class NodeDefinitionError(NodeLoadError):
    """A node file exists but is invalid: names the file (``source``) and the field."""

    reason = "NODE_INVALID"

    def __init__(self, node_id: str, source: str, field: str, problem: str) -> None:
        where = source or node_id
        at = f" field '{field}':" if field else ""
        super().__init__(node_id, f"{where}:{at} {problem}")
        self.source = source
        self.field = field
        self.problem = problem


class GraphError(TrellisError):
    """The graph as a whole is invalid (collisions, validation problems)."""

    reason = "GRAPH_INVALID"

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class WatchNotSupported(TrellisError):
    reason = "WATCH_NOT_SUPPORTED"


# --- engine -------------------------------------------------------------------------


class ExecutionViolation(TrellisError):
    reason = "EXECUTION_VIOLATION"

    def __init__(self, node_id: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id


class ContextValidationError(TrellisError):
    reason = "CONTEXT_MISSING_KEYS"

    def __init__(self, node_id: str, missing_keys: Sequence[str]) -> None:
        keys = " ".join(missing_keys)
        super().__init__(f"Node '{node_id}' requires context keys that are missing: [{keys}]")
        self.node_id = node_id
        self.missing_keys = list(missing_keys)


class ContextTypeValidationError(TrellisError):
    reason = "CONTEXT_INVALID_TYPES"

    def __init__(self, node_id: str, errors: Sequence[str]) -> None:
        super().__init__(f"Node '{node_id}' has invalid context types: " + "; ".join(errors))
        self.node_id = node_id
        self.errors = list(errors)


class InvalidConfirmation(TrellisError):
    reason = "INVALID_CONFIRMATION"
    field = "input"

    def __init__(self, raw: object, node_id: str | None = None) -> None:
        # The text is the Go original's, word for word (the CLI prints it).
        super().__init__(f"invalid confirmation input: '{raw}' (expected y/n/yes/no)")
        self.raw = raw
        self.got = str(raw)
        if node_id:
            self.node_id = node_id


class ReservedNamespace(TrellisError):
    reason = "RESERVED_NAMESPACE"

    def __init__(self, node_id: str) -> None:
        super().__init__(f"security violation: cannot save to reserved namespace 'sys' in node {node_id}")
        self.node_id = node_id


class ExpectedToolResult(TrellisError):
    reason = "EXPECTED_TOOL_RESULT"

    def __init__(self, node_id: str | None = None, pending: str | None = None) -> None:
        super().__init__("expected ToolResult input when in WaitingForTool/RollingBack status")
        if node_id is not None:
            self.node_id = node_id
        if pending is not None:
            self.pending = pending


class UnexpectedToolResult(TrellisError):
    """A tool result was sent while no tool call is pending."""

    reason = "UNEXPECTED_TOOL_RESULT"

    def __init__(self, message: str, *, node_id: str | None = None, got: str | None = None) -> None:
        super().__init__(message)
        if node_id is not None:
            self.node_id = node_id
        if got is not None:
            self.got = got


class ToolResultMismatch(TrellisError):
    reason = "TOOL_RESULT_MISMATCH"

    def __init__(self, got: str, pending: str) -> None:
        super().__init__(f"tool result ID {got} does not match pending call {pending}")
        self.got = got
        self.pending = pending


class UnhandledToolError(TrellisError):
    reason = "UNHANDLED_TOOL_ERROR"

    def __init__(self, node_id: str, tool_name: str, cause: str) -> None:
        super().__init__(
            f"tool '{tool_name}' failed in node '{node_id}': {cause}. Execution halted: "
            f"add 'on_error' to node '{node_id}' to handle this failure"
        )
        self.node_id = node_id
        self.tool_name = tool_name
        self.cause = cause


class UnhandledSignal(TrellisError):
    reason = "UNHANDLED_SIGNAL"

    def __init__(self, signal: str, node_id: str) -> None:
        super().__init__(f"signal '{signal}' is not handled by node '{node_id}' or the entry node")
        self.signal = signal
        self.node_id = node_id


class SessionTerminated(TrellisError):
    """Input sent to a session that has already terminated (docs/engine.md, Statuses)."""

    reason = "SESSION_TERMINATED"

    def __init__(self, message: str, *, session_id: str | None = None, node_id: str | None = None) -> None:
        super().__init__(message)
        if session_id is not None:
            self.session_id = session_id
        if node_id is not None:
            self.node_id = node_id


class TemplateError(TrellisError):
    reason = "TEMPLATE_ERROR"


class ConditionError(TrellisError):
    """A transition condition does not compile."""

    reason = "CONDITION_INVALID"


class ConditionOverBudget(ConditionError):
    """A condition would do more work on the data at hand than max_condition_cost allows
    (trellis.evaluation_limits); it is refused before it runs."""

    reason = "CONDITION_OVER_BUDGET"


class InvalidInput(TrellisError):
    """Input rejected before it reaches the engine (size, encoding, shape).

    ``field`` names the request field at fault (a dotted path such as
    ``input.tool_result.id``) when it is known; the gRPC layer sends it as a
    google.rpc.BadRequest field violation too."""

    reason = "INVALID_INPUT"
    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        if field is not None:
            self.field = field


# --- persistence and coordination ---------------------------------------------------


class SessionNotFound(TrellisError):
    reason = "SESSION_NOT_FOUND"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found")
        self.session_id = session_id


class InvalidSessionId(TrellisError):
    reason = "INVALID_SESSION_ID"
    field = "session_id"  # the request field at fault (a BadRequest field violation on the wire)


class StateTooLarge(TrellisError):
    reason = "STATE_TOO_LARGE"


class StoreFull(TrellisError):
    """A store at its configured quota (sessions or bytes) refused a new session or a bigger state."""

    reason = "STORE_FULL"


class ConflictError(TrellisError):
    """A conditional write lost: the stored revision is not the one the caller loaded."""

    reason = "REVISION_CONFLICT"

    def __init__(
        self,
        message: str,
        *,
        session_id: str | None = None,
        expected_revision: int | None = None,
        stored_revision: int | None = None,
    ) -> None:
        super().__init__(message)
        if session_id is not None:
            self.session_id = session_id
        # 0 = absent (the store's convention), so a caller can tell "already exists"
        # (expected 0) from "gone" (stored 0).
        if expected_revision is not None:
            self.expected_revision = expected_revision
        if stored_revision is not None:
            self.stored_revision = stored_revision


class RevisionMismatch(ConflictError):
    """A step sent with ``expected_revision`` found the session at another revision; nothing
    was applied. Retrying the same request cannot succeed: read the session again first."""

    reason = "REVISION_MISMATCH"

    def __init__(self, session_id: str, expected_revision: int, actual_revision: int) -> None:
        super().__init__(
            f"session {session_id!r} is at revision {actual_revision}, not the expected "
            f"{expected_revision}; nothing was applied"
        )
        self.session_id = session_id
        self.expected_revision = expected_revision
        self.actual_revision = actual_revision


class RequestIdReused(InvalidInput):
    """A request ID already applied to the session came with a different request."""

    reason = "REQUEST_ID_REUSED"

    def __init__(self, session_id: str, request_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used for a different request on session "
            f"{session_id!r}; a retry must repeat the request exactly, a new request needs a new ID"
        )
        self.session_id = session_id
        self.request_id = request_id


class WatchRevisionCompacted(TrellisError):
    """A watch asked to resume from a revision whose history the store no longer keeps
    (compacted), so the changes since cannot be replayed: start over from the current
    state (``current``, in process; over the wire: Get the session) and watch from its
    revision + 1 — the Kubernetes "410 Gone, relist" contract."""

    reason = "WATCH_REVISION_COMPACTED"
    current: object = None  # also on an instance rebuilt from the wire (trellis.api.error_table)

    def __init__(
        self, session_id: str, start_revision: int, compact_revision: int, current: object = None
    ) -> None:
        super().__init__(
            f"session {session_id!r}: cannot watch from revision {start_revision}, the history "
            f"before revision {compact_revision} is no longer kept; get the session and watch "
            "again from its revision + 1"
        )
        self.session_id = session_id
        self.start_revision = start_revision
        self.compact_revision = compact_revision
        self.current = current
        """The session's state now (trellis.domain.StepResult) when known, None when deleted."""


class LockLost(TrellisError):
    """The caller's lock expired or was taken over; its write was refused (fencing)."""

    reason = "LOCK_LOST"


class BackendUnavailable(TrellisError):
    """A store, loader, locker or dispatcher backend cannot be reached."""

    reason = "BACKEND_UNAVAILABLE"


class DispatchError(TrellisError):
    """A dispatcher could not run a call at all (as opposed to a tool that failed)."""

    reason = "DISPATCH_FAILED"


class ConfigError(TrellisError):
    reason = "CONFIG_INVALID"


def describe(exc: BaseException) -> str:
    """What went wrong, for a log line: the exception's text, or its class when the text
    is empty (``TimeoutError()``, a bare ``ConnectionError()`` say nothing by themselves)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def all_error_classes() -> list[type[TrellisError]]:
    """Every class of the tree, base first."""
    found: list[type[TrellisError]] = []
    pending: list[type[TrellisError]] = [TrellisError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


# --- service access (gRPC server) -----------------------------------------------------


class StateSignatureInvalid(InvalidInput):
    """A client-carried state whose signature is missing or does not match
    (docs/engine-differences.md, fix #11)."""

    reason = "STATE_SIGNATURE_INVALID"
    field = "state.signature"


class Unauthenticated(TrellisError):
    """A call without a valid bearer token to a server that requires one."""

    reason = "UNAUTHENTICATED"


class TooManyWatchStreams(TrellisError):
    """A watch stream refused: the server already holds as many as it allows (max_watch_streams)."""

    reason = "TOO_MANY_WATCH_STREAMS"


class RequestTooLarge(TrellisError):
    """An HTTP request whose body is larger than the server takes (max_message_bytes)."""

    reason = "REQUEST_TOO_LARGE"
