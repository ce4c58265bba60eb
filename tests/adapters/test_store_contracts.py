"""The public StateStore contract, run against the in-process stores."""

from __future__ import annotations

from pathlib import Path

from trellis.adapters.file_store import FileStore
from trellis.adapters.memory_store import MemoryStore
from trellis.contracts.store import StateStoreContract
from trellis.ports.store import StateStore


class TestMemoryStoreContract(StateStoreContract):
    async def make_store(self, tmp_path: Path) -> StateStore:
        return MemoryStore()


class TestFileStoreContract(StateStoreContract):
    async def make_store(self, tmp_path: Path) -> StateStore:
        return FileStore(tmp_path / "sessions")
