"""LockedStore: a StepStore made of a StateStore and, optionally, a DistributedLocker.

The session manager has one step path, ``lock_and_load`` → work →
``save_and_unlock``. A store that is its own lock service (etcd) implements
both in one round trip each; any other store gets them from this wrapper, which
takes the locker's lock, loads, and saves fenced by that lock. Without a locker
(one process drives every session, e.g. ``trellis run``) the manager's own
per-session local lock is the whole critical section and the save is unfenced.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from trellis.domain import State
from trellis.errors import BackendUnavailable, SessionNotFound, TrellisError
from trellis.ports.locker import DistributedLocker, LockHandle
from trellis.ports.store import StateStore, StepStore

LOG = logging.getLogger("trellis.sessions")


class LockedStore:
    def __init__(
        self,
        store: StateStore,
        locker: DistributedLocker | None = None,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        """``logger``: where a failed release is reported (default ``trellis.sessions``)."""
        self._store = store
        self._locker = locker
        self._logger = logger or LOG

    async def lock_and_load(self, session_id: str, ttl: float) -> tuple[LockHandle, State | None]:
        handle = await self._acquire(session_id, ttl)
        try:
            return handle, await self._store.load(session_id)
        except SessionNotFound:
            return handle, None
        except BaseException as exc:
            await self._unlock(handle)
            if _foreign(exc):
                raise BackendUnavailable(f"loading session {session_id!r} failed: {exc}") from exc
            raise

    async def save_and_unlock(self, handle: LockHandle, session_id: str, state: State | None) -> int:
        try:
            if state is None:
                return 0
            fence = None if handle is _NO_LOCK else handle
            try:
                return await self._store.save(
                    session_id, state, expected_revision=state.revision, fence=fence
                )
            except Exception as exc:
                if _foreign(exc):
                    raise BackendUnavailable(f"saving session {session_id!r} failed: {exc}") from exc
                raise
        finally:
            await self._unlock(handle)

    async def _acquire(self, session_id: str, ttl: float) -> LockHandle:
        if self._locker is None:
            return _NO_LOCK
        try:
            return await self._locker.acquire(session_id, ttl)
        except (TrellisError, asyncio.CancelledError, TimeoutError):
            raise
        except Exception as exc:
            raise BackendUnavailable(f"failed to acquire distributed lock: {exc}") from exc

    async def _unlock(self, handle: LockHandle) -> None:
        try:
            await handle.unlock()
        except Exception as exc:
            # Never fail a step that already happened: the lock expires by its TTL anyway.
            self._logger.warning("failed to release the lock of session %r: %s", handle.key, exc)


def step_store_for(
    store: StateStore, locker: DistributedLocker | None, *, logger: logging.Logger | None = None
) -> StepStore:
    """The store itself when it is its own lock service and no separate locker was asked
    for; otherwise the store and locker combined."""
    if locker is None and isinstance(store, StepStore):
        return store
    return LockedStore(store, locker, logger=logger)


def _foreign(exc: BaseException) -> bool:
    """A store's own error (an OSError, a driver's exception), to be reported as
    BackendUnavailable saying what was being done; trellis errors, cancellation and
    deadlines keep their meaning."""
    return isinstance(exc, Exception) and not isinstance(
        exc, (TrellisError, asyncio.CancelledError, TimeoutError)
    )


class _NoLock:
    """The handle of a step with no distributed lock: the local lock is the whole section."""

    key: Final = ""
    token: Final = 0

    def held(self) -> bool:
        return True

    async def unlock(self) -> None:
        return None


_NO_LOCK: Final = _NoLock()
