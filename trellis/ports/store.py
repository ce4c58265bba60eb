"""StateStore: durable sessions with revisions.

Every error named below is a class of ``trellis.errors`` (all TrellisError
subclasses); the server maps each to its wire status through one table
(trellis/api/error_table.py), so a store raises them and nothing else for the
cases they name. The rules a store applies — which session IDs are "empty or
unsafe", the ``expected_revision`` compare, the ``list`` order, the JSON value
rules — are implemented once in the public module ``trellis.adapters.rules``;
``trellis.contracts.store`` checks them. docs/adapters.md is the guide.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from trellis.domain import State
from trellis.ports.locker import LockHandle


@dataclass(frozen=True, slots=True)
class SessionPage:
    session_ids: list[str]
    next_page_token: str = ""


@runtime_checkable
class StateStore(Protocol):
    async def save(
        self,
        session_id: str,
        state: State,
        *,
        expected_revision: int | None = None,
        fence: LockHandle | None = None,
    ) -> int:
        """Store an isolated copy of ``state`` and return its new revision (> 0).

        Revisions of a session increase with every save and are never reused, not
        even after the session was deleted and created again (a writer still
        holding an old revision must get ConflictError).
        ``expected_revision``: None saves unconditionally; 0 means "the session
        must not exist yet"; n > 0 means "the stored revision must still be n".
        The compare and the write are one atomic step: of many concurrent saves
        expecting the same revision, exactly one succeeds.
        ``fence``: when given, the write only happens while that lock is still
        held. A store with its own lock service checks that in the same
        transaction as the write; any other store can only ask ``fence.held()``
        (this process's belief, see LockHandle) and so is not fenced against a
        paused process — see docs/adapters.md, "Fencing".

        Raises (all from trellis.errors; on any of them nothing changed):
        InvalidSessionId — the ID is empty or unsafe (trellis.adapters.rules.check_session_id);
        InvalidInput — the state holds a value JSON cannot (NaN, an infinity, an
        integer outside -2**63..2**64-1; trellis.adapters.rules.encode_state);
        StateTooLarge — the encoded state is over the store's limit;
        ConflictError — ``expected_revision`` did not match;
        LockLost — ``fence`` is no longer held;
        StoreFull — a store with a quota (memory) is full;
        BackendUnavailable — the backend cannot be reached.
        """
        ...

    async def load(self, session_id: str) -> State:
        """An isolated copy of the stored state with ``revision`` set.

        Raises (trellis.errors): SessionNotFound (its ``session_id`` set) when there
        is no such session; InvalidSessionId for an empty or unsafe ID;
        BackendUnavailable when the backend cannot be reached; TrellisError naming
        the session when the stored data is damaged."""
        ...

    async def delete(self, session_id: str) -> None:
        """Remove the session. Idempotent: deleting a missing session is not an error.
        The session's last revision stays used (see ``save``).

        Raises (trellis.errors): InvalidSessionId for an empty or unsafe ID;
        BackendUnavailable when the backend cannot be reached."""
        ...

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        """Session IDs in ascending Unicode code-point order (Python's ``str`` order;
        also the byte order of UTF-8), at most ``page_size`` (0 = all) per page,
        continuing strictly after ``page_token`` (the last ID of the previous page;
        "" = from the start). ``next_page_token`` is "" on the last page. A session
        created between two pages never makes a page repeat or skip an ID that
        existed all along (trellis.adapters.rules.paginate does this).

        Raises (trellis.errors): InvalidInput for a negative ``page_size``;
        BackendUnavailable when the backend cannot be reached."""
        ...


@runtime_checkable
class StepStore(Protocol):
    """Optional capability of a store that is also a lock service (etcd): take the
    session's lock and read its state in one round trip, then write and release
    in one. The session manager uses it instead of a separate locker + store so
    an uncontended durable step costs two round trips.

    How it is chosen: a store is a StepStore when it has both methods
    (``isinstance(store, StepStore)``, a runtime-checkable protocol). The server
    then uses it — and builds no separate locker — only when the configured
    ``locker`` has the same URL scheme as the ``store`` (``store: etcd:`` with
    ``locker: etcd:``); with any other locker the store is used as a plain
    StateStore fenced by that locker. Errors are those of trellis.errors named
    below plus BackendUnavailable."""

    async def lock_and_load(self, session_id: str, ttl: float) -> tuple[LockHandle, State | None]:
        """Wait for and take the session's lock; return it with the stored state
        (None when the session does not exist). Contended waits are fair (FIFO)."""
        ...

    async def save_and_unlock(self, handle: LockHandle, session_id: str, state: State | None) -> int:
        """Write ``state`` (None: write nothing) only if ``handle`` still holds the
        lock and the stored revision is still ``state.revision``, then release the
        lock, all in one transaction. Returns the new revision (or the old one when
        nothing was written). Raises LockLost or ConflictError and changes nothing;
        the lock is released in every case."""
        ...


class StepConflict(Exception):
    """An optimistic step's write was refused (OptimisticStepStore.save_if_unlocked) and
    nothing changed: the session moved since it was read (``current``: its stored state
    now, read in the same transaction; None when it is gone), or its lock is held or
    waited for (``locked``: the step must queue for it). Not a TrellisError: the session
    manager always handles it (retry, or take the lock), it never reaches a caller."""

    def __init__(self, message: str, *, current: State | None, locked: bool) -> None:
        super().__init__(message)
        self.message = message
        self.current = current
        self.locked = locked


@runtime_checkable
class OptimisticStepStore(StepStore, Protocol):
    """Optional capability of a StepStore whose backend can compare and write in one
    transaction (etcd): an uncontended step takes no lock at all. The session
    manager starts from what this replica last saw of the session (``load_cached``,
    else ``load_unlocked``), computes the step, and commits it with
    ``save_if_unlocked``, which refuses the write if the session moved or anyone
    holds or waits for its lock. A refused
    attempt changes nothing; the manager retries it or falls back to the lock path
    (``lock_and_load``), which stays the fair one under contention.
    """

    def load_cached(self, session_id: str) -> State | None:
        """This replica's last view of the session (a fresh copy), None when it has none.
        Possibly stale: only ``save_if_unlocked``'s compare validates it."""
        ...

    async def load_unlocked(self, session_id: str) -> State | None:
        """The stored state, read without taking the lock (None: it does not exist)."""
        ...

    async def save_if_unlocked(self, session_id: str, state: State) -> int:
        """Write ``state`` in one transaction if the stored revision is still
        ``state.revision`` (0: the session must not exist) and no lock of the
        session is held or waited for. Returns the new revision. Raises
        StepConflict (nothing changed) when a compare fails."""
        ...


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One thing a session watch of a WatchableStore reports, at ``revision``: a saved
    version (``state``, with ``previous``, the version it replaced, None when it created
    the session), the deletion (``deleted``), or a bookmark (neither: every change up to
    ``revision`` has been reported)."""

    revision: int
    state: State | None = None
    previous: State | None = None
    deleted: bool = False


class StoreEvents(Protocol):
    """The StoreEvents of one session watch, in revision order."""

    def __aiter__(self) -> AsyncIterator[StoreEvent]: ...
    def __anext__(self) -> Awaitable[StoreEvent]: ...
    async def aclose(self) -> None:
        """Stop watching; safe to call more than once."""
        ...


@runtime_checkable
class WatchableStore(Protocol):
    """Optional capability of a store that every replica writes to (etcd): a session
    watch fed by the store itself, so it sees every saved version whichever process
    saved it. Without it the session manager reports the steps of its own process."""

    def watch_session(self, session_id: str, start_revision: int) -> StoreEvents:
        """Every change of ``session_id`` at revision ``start_revision`` (> 0) or later,
        in order, and a bookmark now and then while nothing changes; the stream ends
        after the deletion. Raises (from the stream) WatchRevisionCompacted when that
        history is no longer kept, BackendUnavailable when the store cannot be reached
        for longer than it retries."""
        ...
