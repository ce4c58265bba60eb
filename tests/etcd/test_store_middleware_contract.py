"""The store middleware (PII masking, encryption at rest, and both stacked) over the etcd
store passes the public StateStore contract against a real etcd."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.encrypting_store import EncryptingStore, KeyRing, encrypting, new_key_line
from trellis.adapters.etcd import EtcdClient, EtcdLocker, EtcdStateStore
from trellis.adapters.masking_store import MaskingRules, MaskingStore, masking
from trellis.contracts.store import StateStoreContract
from trellis.ports.locker import LockHandle
from trellis.ports.store import StateStore

# A key longer than any the contract generates (12 characters): its contexts round-trip unchanged.
RULES = MaskingRules.from_config({"keys": ["^contract-suite-secret$"]}, "test")
RING = KeyRing.from_text(new_key_line("k1"), "test keys")


def _etcd_store(store: StateStore) -> EtcdStateStore:
    while isinstance(store, MaskingStore | EncryptingStore):
        store = store.inner
    assert isinstance(store, EtcdStateStore)
    return store


class _OverEtcd(StateStoreContract):
    max_state_bytes = 64 * 1024  # the etcd store's limit, on what the middleware hands it

    @pytest.fixture(autouse=True)
    def _etcd(self, etcd_server: EtcdCluster) -> None:
        self.cluster = etcd_server

    def wrap(self, store: EtcdStateStore) -> StateStore:
        raise NotImplementedError

    async def make_store(self, tmp_path: Path) -> StateStore:
        client = EtcdClient(config_for(self.cluster))
        await client.connect()
        return self.wrap(EtcdStateStore(client, max_state_bytes=self.max_state_bytes))

    async def close_store(self, store: StateStore) -> None:
        await _etcd_store(store).client.close()

    async def make_fence(self, store: StateStore, key: str) -> LockHandle:
        return await EtcdLocker(_etcd_store(store).client).acquire(key, ttl=60)


class TestMaskedEtcdStoreContract(_OverEtcd):
    def wrap(self, store: EtcdStateStore) -> StateStore:
        return masking(store, RULES)


class TestEncryptedEtcdStoreContract(_OverEtcd):
    def wrap(self, store: EtcdStateStore) -> StateStore:
        return encrypting(store, RING)


class TestMaskedEncryptedEtcdStoreContract(_OverEtcd):
    def wrap(self, store: EtcdStateStore) -> StateStore:
        return masking(encrypting(store, RING), RULES)
