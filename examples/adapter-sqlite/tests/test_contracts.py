"""The public trellis contract suites, run against this package's adapters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from trellis_sqlite import FileLocker, SqliteStore

from trellis.contracts.locker import DistributedLockerContract
from trellis.contracts.store import StateStoreContract
from trellis.domain import State
from trellis.errors import LockLost
from trellis.ports.locker import DistributedLocker, LockHandle
from trellis.ports.store import StateStore


class TestSqliteStore(StateStoreContract):
    max_state_bytes = 64 * 1024

    async def make_store(self, tmp_path: Path) -> StateStore:
        return SqliteStore(tmp_path / "sessions.db", max_state_bytes=self.max_state_bytes)

    async def close_store(self, store: StateStore) -> None:
        assert isinstance(store, SqliteStore)
        await store.close()

    async def make_fence(self, store: StateStore, key: str) -> LockHandle:
        assert isinstance(store, SqliteStore)
        return await FileLocker(store.path.parent / "locks").acquire(key, ttl=60)


class TestFileLocker(DistributedLockerContract):
    async def make_locker(self, tmp_path: Path) -> DistributedLocker:
        return FileLocker(tmp_path / "locks")


class _Paused:
    """A holder whose process was paused past its TTL: it still believes it holds the lock."""

    def __init__(self, handle: LockHandle) -> None:
        self.key, self.token = handle.key, handle.token

    def held(self) -> bool:
        return True

    async def unlock(self) -> None:
        pass


@pytest.mark.asyncio
async def test_a_paused_holder_is_fenced_by_its_token(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sessions.db")
    locker = FileLocker(tmp_path / "locks")
    state = State.new("s1", "start")
    try:
        async with asyncio.timeout(30):
            first = await locker.acquire("s1", ttl=0.2)
            paused = _Paused(first)
            second = await locker.acquire("s1", ttl=60)  # granted once first's TTL ran out
            kept = await store.save("s1", state, fence=second)
            with pytest.raises(LockLost, match="superseded"):
                await store.save("s1", state, fence=paused)
            await second.unlock()
            assert (await store.load("s1")).revision == kept
    finally:
        await store.close()
