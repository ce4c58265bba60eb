"""Per-key asyncio locks that exist only while someone uses them.

A long-running server sees millions of session IDs; keeping one lock per ID
forever would leak. Each entry counts its users (holders and waiters) and is
removed when the count drops to zero.
"""

from __future__ import annotations

import asyncio


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _Hold:
    """One use of a key's lock. A plain async context manager rather than an
    ``@asynccontextmanager`` generator: it is on every durable step's path, and the
    generator machinery cost more than the lock itself."""

    __slots__ = ("_entries", "_entry", "_key")

    def __init__(self, entries: dict[str, _Entry], key: str) -> None:
        self._entries = entries
        self._key = key
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = _Entry()
        entry.users += 1
        self._entry = entry

    async def __aenter__(self) -> None:
        try:
            await self._entry.lock.acquire()
        except BaseException:
            # A waiter cancelled before it got the lock still gives up its use.
            self._release_use()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._entry.lock.release()
        self._release_use()

    def _release_use(self) -> None:
        entry = self._entry
        entry.users -= 1
        if entry.users == 0:
            del self._entries[self._key]


class KeyedLocks:
    """``async with locks.hold(key): ...`` — mutual exclusion per key, FIFO per key."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def hold(self, key: str) -> _Hold:
        return _Hold(self._entries, key)

    def __len__(self) -> int:
        """How many keys are in use right now (0 when idle: nothing leaks)."""
        return len(self._entries)
