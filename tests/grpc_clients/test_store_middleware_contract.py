"""The store middleware (PII masking, encryption at rest) over a remote store passes the
public StateStore contract: wrapped around the client (RemoteStateStore), and inside the
server that serves the StateStore service."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import ClassVar

from tests.support.servers import serving
from trellis.adapters.encrypting_store import KeyRing, encrypting, new_key_line
from trellis.adapters.grpc import RemoteChannel, RemoteStateStore
from trellis.adapters.masking_store import MaskingRules, masking
from trellis.adapters.memory_store import MemoryStore
from trellis.contracts.store import StateStoreContract
from trellis.ports.store import StateStore

# A key longer than any the contract generates (12 characters): its contexts round-trip unchanged.
RULES = MaskingRules.from_config({"keys": ["^contract-suite-secret$"]}, "test")
RING = KeyRing.from_text(new_key_line("k1"), "test keys")


class _Remote(StateStoreContract):
    stacks: ClassVar[dict[int, AsyncExitStack]] = {}
    max_state_bytes = 64 * 1024  # the served store's limit, on what reaches it

    def served_store(self) -> StateStore:
        return MemoryStore(max_state_bytes=self.max_state_bytes)

    def wrap(self, store: RemoteStateStore) -> StateStore:
        return store

    async def make_store(self, tmp_path: Path) -> StateStore:
        stack = AsyncExitStack()
        served = await stack.enter_async_context(serving(store=self.served_store()))
        remote = RemoteStateStore(RemoteChannel(served.internal_target))
        stack.push_async_callback(remote.aclose)
        store = self.wrap(remote)
        self.stacks[id(store)] = stack
        return store

    async def close_store(self, store: StateStore) -> None:
        await self.stacks.pop(id(store)).aclose()


class TestMaskedRemoteStoreContract(_Remote):
    def wrap(self, store: RemoteStateStore) -> StateStore:
        return masking(store, RULES)


class TestMaskedEncryptedRemoteStoreContract(_Remote):
    def wrap(self, store: RemoteStateStore) -> StateStore:
        return masking(encrypting(store, RING), RULES)


class TestRemoteStoreOfAMaskingServerContract(_Remote):
    def served_store(self) -> StateStore:
        return masking(MemoryStore(max_state_bytes=self.max_state_bytes), RULES)

