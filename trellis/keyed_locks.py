"""Per-key asyncio locks that exist only while someone uses them.

A long-running server sees millions of session IDs; keeping one lock per ID
forever would leak. Each entry counts its users (holders and waiters) and is
removed when the count drops to zero (spec §13.5).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    """``async with locks.hold(key): ...`` — mutual exclusion per key, FIFO per key."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            # Also runs when the waiter is cancelled before it got the lock.
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]

    def __len__(self) -> int:
        """How many keys are in use right now (0 when idle: nothing leaks)."""
        return len(self._entries)
