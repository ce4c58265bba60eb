"""The process lease: losing it loses every lock; a new one follows when etcd returns.
And a 3-member cluster keeps serving locks while one member is killed and restarted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.support.etcd_counting import CountingInterceptor
from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdLocker, EtcdStateStore, Health
from trellis.domain import State
from trellis.errors import BackendUnavailable, LockLost


async def eventually(condition: Callable[[], bool], bound: float = 20.0) -> bool:
    """Poll ``condition`` (bounded); True as soon as it holds."""
    for _ in range(int(bound / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def test_lost_lease_releases_every_lock_and_a_new_lease_follows(private_etcd: EtcdCluster) -> None:
    health: list[Health] = []
    client = EtcdClient(config_for(private_etcd, request_timeout=1.0), on_health=health.append)
    locker = EtcdLocker(client)
    store = EtcdStateStore(client)
    try:
        await store.save("s", State.new("s", "start"))
        first = await locker.acquire("k1", ttl=2)
        second = await locker.acquire("k2", ttl=2)
        step, state = await store.lock_and_load("s", ttl=2)  # a step in flight
        assert first.held() and second.held() and step.held()
        assert health == [Health.SERVING]

        member = private_etcd.members[0]
        member.stop()
        assert await eventually(lambda: not first.held())
        assert not second.held()
        assert health[-1] is Health.NOT_SERVING

        private_etcd.restart(member)
        assert await eventually(lambda: health[-1] is Health.SERVING)
        # The step's lock went with the lease: its write is refused and nothing changes.
        assert state is not None and not step.held()
        state.context["late"] = True
        with pytest.raises(LockLost):
            await store.save_and_unlock(step, "s", state)
        stored = await store.load("s")
        assert stored.revision == state.revision and "late" not in stored.context
        async with asyncio.timeout(10):
            again = await locker.acquire("k1", ttl=2)
            other = await EtcdLocker(EtcdClient(client.config)).acquire("k2", ttl=2)
        assert again.held() and other.held()
        assert again.token > first.token
        assert again.lease.id != first.lease.id
        await other.unlock()
        await again.unlock()
    finally:
        await client.close()


async def test_a_waiter_gives_up_when_the_lease_is_lost(private_etcd: EtcdCluster) -> None:
    client = EtcdClient(config_for(private_etcd, request_timeout=1.0))
    other = EtcdClient(client.config)
    try:
        holder = await EtcdLocker(other).acquire("k", ttl=60)
        waiter = asyncio.create_task(EtcdLocker(client).acquire("k", ttl=2))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        private_etcd.members[0].stop()
        async with asyncio.timeout(20):
            error = await asyncio.gather(waiter, return_exceptions=True)
        assert isinstance(error[0], BackendUnavailable | LockLost), error
        assert holder.held()  # that lease (60 s) outlives the outage
    finally:
        await client.close()
        await other.abandon()


async def test_locks_keep_working_while_a_cluster_member_is_down(etcd_cluster3: EtcdCluster) -> None:
    health: list[Health] = []
    client = EtcdClient(config_for(etcd_cluster3), on_health=health.append)
    locker = EtcdLocker(client)
    try:
        held = await locker.acquire("long", ttl=3)
        for victim in etcd_cluster3.members[:2]:
            victim.kill()
            for n in range(5):
                async with asyncio.timeout(10):
                    handle = await locker.acquire("short", ttl=3)
                    waiter = asyncio.create_task(locker.acquire("short", ttl=3))
                    await asyncio.sleep(0.01)
                    await handle.unlock()
                    successor = await waiter
                assert successor.token > handle.token, n
                await successor.unlock()
            # Longer than the lease TTL: renewals found the surviving members.
            await asyncio.sleep(3.5)
            assert held.held()
            etcd_cluster3.restart(victim)
        assert Health.NOT_SERVING not in health
        await held.unlock()
    finally:
        await client.close()


async def test_locks_with_different_ttls_share_the_shortest_lease_granted(etcd_server: EtcdCluster) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(config_for(etcd_server), interceptors=[counter]) as client:
        locker = EtcdLocker(client)
        short = await locker.acquire("a", ttl=5)
        longer = [await locker.acquire(name, ttl=ttl) for name, ttl in (("b", 30), ("c", 7.5), ("d", 600))]
        # One grant: a lock asking for a longer TTL rides on the 5 s lease (it outlives a
        # crashed holder by at most 5 s, less than it allows).
        assert counter.methods.count("/etcdserverpb.Lease/LeaseGrant") == 1
        assert {handle.lease.id for handle in longer} == {short.lease.id}
        # Only a lock asking for less than any lease held gets one of its own.
        shorter = await locker.acquire("e", ttl=2)
        assert counter.methods.count("/etcdserverpb.Lease/LeaseGrant") == 2
        assert shorter.lease.id != short.lease.id and shorter.lease.ttl <= 2
        again = await locker.acquire("f", ttl=3)
        assert again.lease.id == shorter.lease.id
