"""EtcdStateStore passes the public StateStore contract against a real etcd."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdLocker, EtcdStateStore
from trellis.contracts.store import StateStoreContract
from trellis.ports.locker import LockHandle
from trellis.ports.store import StateStore


class TestEtcdStateStoreContract(StateStoreContract):
    max_state_bytes = 64 * 1024

    @pytest.fixture(autouse=True)
    def _etcd(self, etcd_server: EtcdCluster) -> None:
        self.cluster = etcd_server

    async def make_store(self, tmp_path: Path) -> StateStore:
        client = EtcdClient(config_for(self.cluster))
        await client.connect()
        return EtcdStateStore(client, max_state_bytes=self.max_state_bytes)

    async def close_store(self, store: StateStore) -> None:
        assert isinstance(store, EtcdStateStore)
        await store.client.close()

    async def make_fence(self, store: StateStore, key: str) -> LockHandle:
        assert isinstance(store, EtcdStateStore)
        return await EtcdLocker(store.client).acquire(key, ttl=60)
