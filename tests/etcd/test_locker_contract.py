"""EtcdLocker passes the public DistributedLocker contract against a real etcd."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdLocker
from trellis.contracts.locker import DistributedLockerContract
from trellis.ports.locker import DistributedLocker


class TestEtcdLockerContract(DistributedLockerContract):
    SETTLE = 0.15  # a waiter queues after one etcd round trip; leave room on a busy machine

    @pytest.fixture(autouse=True)
    def _etcd(self, etcd_server: EtcdCluster) -> None:
        self.config = config_for(etcd_server)

    def peer_attributes(self) -> dict[str, Any]:
        return {"config": self.config}  # the other process connects to the same etcd

    async def make_locker(self, tmp_path: Path) -> DistributedLocker:
        client = EtcdClient(self.config)
        await client.connect()
        return EtcdLocker(client)

    async def close_locker(self, locker: DistributedLocker) -> None:
        assert isinstance(locker, EtcdLocker)
        await locker.client.close()

    async def test_an_expired_holder_loses_the_lock_to_the_next_waiter(
        self, locker: DistributedLocker
    ) -> None:
        """The etcd form of this contract test: a lock lives as long as its process
        lease, which a live process keeps renewing (documented in docs/etcd.md), so
        "a holder that stops renewing" is a crashed process. Here a second client
        is the crashed process; after the TTL its lock goes to the next waiter."""
        assert isinstance(locker, EtcdLocker)
        crashed = EtcdClient(locker.client.config)
        async with asyncio.timeout(15.0):
            stale = await EtcdLocker(crashed).acquire("k-ttl", ttl=1)
            waiter = asyncio.create_task(locker.acquire("k-ttl", ttl=60))
            assert await self._still_waiting(waiter)
            await crashed.abandon()  # no unlock, no revoke: the lease must run out
            fresh = await waiter
            assert not stale.held()
            assert fresh.held()
            assert fresh.token > stale.token
            third = asyncio.create_task(locker.acquire("k-ttl", ttl=60))
            assert await self._still_waiting(third)
            await fresh.unlock()
            handle = await third
            await handle.unlock()
