"""SessionsPort: durable steps of sessions, as a host drives them.

Satisfied in process by trellis.sessions.SessionManager and over gRPC by the
SDK's ``Client.sessions``: the server's Sessions service, the terminal runner
and embedders all program against this one protocol.

Errors are classes of ``trellis.errors``: every method raises InvalidSessionId
for an empty or unsafe ID (trellis.adapters.rules) and BackendUnavailable when
a backend cannot be reached; a step (``start``, ``navigate``, ``signal``) also
raises what EnginePort raises for it (trellis.ports.engine) and what the store
raises when it saves (StateTooLarge, StoreFull; trellis.ports.store). A step
that fails changes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Protocol, runtime_checkable

from trellis.domain import JSONValue, SessionEvent, StateDiff, StepResult, ToolResult
from trellis.ports.store import SessionPage


class DiffStream(Protocol):
    """What a session watch yields: the changes of each committed step, in order."""

    def __aiter__(self) -> AsyncIterator[StateDiff]: ...
    def __anext__(self) -> Awaitable[StateDiff]: ...
    async def aclose(self) -> None:
        """Stop receiving; safe to call more than once."""
        ...


class EventStream(Protocol):
    """What a resumable session watch yields: changes, bookmarks and the deletion."""

    def __aiter__(self) -> AsyncIterator[SessionEvent]: ...
    def __anext__(self) -> Awaitable[SessionEvent]: ...
    async def aclose(self) -> None:
        """Stop receiving; safe to call more than once."""
        ...


@runtime_checkable
class SessionsPort(Protocol):
    async def start(
        self, session_id: str, context: Mapping[str, JSONValue] | None = None, *, request_id: str = ""
    ) -> StepResult:
        """Load or start: an existing session is returned untouched (``context``
        ignored); a new one is created at the entry node and advanced. The result's
        ``created`` says which. ``request_id`` (optional): see trellis.request_ids."""
        ...

    async def get(self, session_id: str) -> StepResult:
        """The stored state and what its current node shows. Raises SessionNotFound."""
        ...

    async def navigate(
        self,
        session_id: str,
        input: JSONValue | ToolResult,
        *,
        request_id: str = "",
        expected_revision: int | None = None,
    ) -> StepResult:
        """One durable step with user input or a tool result. ``request_id``: a request
        repeated with an ID already applied applies nothing again (trellis.request_ids).
        ``expected_revision``: apply only at that revision, else RevisionMismatch.
        Raises SessionNotFound."""
        ...

    async def signal(
        self, session_id: str, name: str, *, request_id: str = "", expected_revision: int | None = None
    ) -> StepResult:
        """One durable step after a signal (``interrupt``, ``timeout``, a custom name);
        ``request_id`` and ``expected_revision`` as for ``navigate``. Raises SessionNotFound,
        UnhandledSignal."""
        ...

    async def delete(self, session_id: str) -> None:
        """Remove the session (idempotent); its watches end."""
        ...

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        """Session IDs in ascending code-point order, a page at a time (as
        StateStore.list). Raises InvalidInput for a negative ``page_size``."""
        ...

    def watch(self, session_id: str, *, start_revision: int = 0) -> DiffStream:
        """The changes of each step committed after the call (``start_revision`` > 0: at
        that revision or later), until the session is deleted."""
        ...

    def watch_events(self, session_id: str, *, start_revision: int = 0) -> EventStream:
        """``watch`` with the revision of each change, bookmarks and the deletion, so a
        watcher can resume from the last revision + 1 (SessionManager.watch_events)."""
        ...
