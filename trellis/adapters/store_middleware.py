"""Store middleware: a StateStore over another that changes each state on its way in
(``stored``) and out (``loaded``): masking and encryption at rest are two of them.

The wrapper keeps the StepStore capability of the store it wraps (``MiddlewareStepStore``),
so a store that is its own lock service keeps its one-round-trip step under middleware.
"""

from __future__ import annotations

from typing import cast

from trellis.domain import State
from trellis.ports.locker import LockHandle
from trellis.ports.store import SessionPage, StateStore, StepStore


class MiddlewareStore:
    """A StateStore over ``inner``; subclasses say what ``stored`` and ``loaded`` change."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner

    def stored(self, session_id: str, state: State) -> State:
        """What is written to ``inner`` for ``state`` (default: the state itself)."""
        return state

    def loaded(self, session_id: str, state: State) -> State:
        """What a caller gets for ``state`` read from ``inner`` (default: the state itself)."""
        return state

    async def save(
        self,
        session_id: str,
        state: State,
        *,
        expected_revision: int | None = None,
        fence: LockHandle | None = None,
    ) -> int:
        return await self.inner.save(
            session_id, self.stored(session_id, state), expected_revision=expected_revision, fence=fence
        )

    async def load(self, session_id: str) -> State:
        return self.loaded(session_id, await self.inner.load(session_id))

    async def delete(self, session_id: str) -> None:
        await self.inner.delete(session_id)

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        return await self.inner.list(page_size, page_token)


class MiddlewareStepStore(MiddlewareStore):
    """A MiddlewareStore over a StepStore, which it is too (its lock+load, save+unlock)."""

    async def lock_and_load(self, session_id: str, ttl: float) -> tuple[LockHandle, State | None]:
        handle, state = await cast(StepStore, self.inner).lock_and_load(session_id, ttl)
        return handle, (self.loaded(session_id, state) if state is not None else None)

    async def save_and_unlock(self, handle: LockHandle, session_id: str, state: State | None) -> int:
        written = self.stored(session_id, state) if state is not None else None
        return await cast(StepStore, self.inner).save_and_unlock(handle, session_id, written)
