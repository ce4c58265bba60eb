"""StateStore: durable sessions with revisions."""

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

        ``expected_revision``: None saves unconditionally; 0 means "the session
        must not exist yet"; n > 0 means "the stored revision must still be n".
        A failed compare raises ConflictError and changes nothing.
        ``fence``: when given, the write only happens while that lock is still
        held; otherwise LockLost is raised and nothing changes.
        Raises InvalidSessionId for an empty or unsafe ID, StateTooLarge when the
        encoded state exceeds the store's limit, BackendUnavailable when the
        backend cannot be reached.
        """
        ...

    async def load(self, session_id: str) -> State:
        """An isolated copy of the stored state with ``revision`` set.
        Raises SessionNotFound, InvalidSessionId, BackendUnavailable."""
        ...

    async def delete(self, session_id: str) -> None:
        """Idempotent: deleting a missing session is not an error."""
        ...

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        """Session IDs in ascending order, at most ``page_size`` (0 = all) per page,
        continuing after ``page_token`` (the last ID of the previous page)."""
        ...


@runtime_checkable
class StepStore(Protocol):
    """Optional capability of a store that is also a lock service (etcd): take the
    session's lock and read its state in one round trip, then write and release
    in one. The session manager uses it instead of a separate locker + store so
    an uncontended durable step costs two round trips."""

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
