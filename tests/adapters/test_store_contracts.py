"""The public StateStore contract, run against the in-process stores."""

from __future__ import annotations

from pathlib import Path

from trellis.adapters.file_store import FileStore
from trellis.adapters.memory_store import MemoryStore
from trellis.contracts.store import StateStoreContract
from trellis.ports.store import StateStore

LIMIT = 64 * 1024


class TestMemoryStoreContract(StateStoreContract):
    max_state_bytes = LIMIT

    async def make_store(self, tmp_path: Path) -> StateStore:
        return MemoryStore(max_state_bytes=LIMIT)


class TestFileStoreContract(StateStoreContract):
    max_state_bytes = LIMIT

    async def make_store(self, tmp_path: Path) -> StateStore:
        return FileStore(tmp_path / "sessions", max_state_bytes=LIMIT)
