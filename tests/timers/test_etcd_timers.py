"""Durable timers in etcd (trellis.adapters.etcd.timers) over a real etcd: a step that
arms a timer is still ONE transaction and the timer key carries the step's revision;
a due timer is claimed by exactly one of several replicas; a claim whose claimant died
comes due again for another one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.support.etcd_counting import CountingInterceptor
from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.adapters.etcd.timers import EtcdTimerQueue
from trellis.adapters.memory_loader import MemoryLoader
from trellis.engine import Engine
from trellis.sessions import SessionManager
from trellis.timers import TimerService


def _chain(timeout: str) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = [
        {"id": f"c{i}", "wait": True, "timeout": timeout, "on_timeout": "late", "to": f"c{i + 1}"}
        for i in range(4)
    ]
    return [*nodes, {"id": "c4", "content": "end"}, {"id": "late", "wait": True, "to": "late"}]


def _replica(client: EtcdClient, timeout: str) -> tuple[SessionManager, EtcdTimerQueue]:
    store = EtcdStateStore(client)
    queue = EtcdTimerQueue(client)
    store.written_with_save = queue.written_with_save
    manager = SessionManager(Engine(MemoryLoader(_chain(timeout)), entry_node="c0"), store)
    TimerService(manager, queue)  # arms timers; its firing loop is not run here
    return manager, queue


async def test_a_step_that_arms_a_timer_is_one_transaction_and_the_timer_has_its_revision(
    etcd_server: EtcdCluster,
) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(config_for(etcd_server), interceptors=[counter]) as client:
        manager, queue = _replica(client, "1h")
        await manager.start("s")
        for n in range(3):
            counter.methods.clear()
            result = await manager.navigate("s", f"input {n}")
            assert counter.methods == ["/etcdserverpb.KV/Txn"]
        assert result.state.current_node_id == "c3"
        # Claimable in an hour: the newest timer is for the revision of the last step.
        claimed = await queue.claim_due(time.time() + 3600 + 60, 100, 10.0)
        newest = max(claimed, key=lambda timer: timer.revision)
        assert (newest.session_id, newest.node_id, newest.revision) == ("s", "c3", result.state.revision)
        assert sorted(timer.node_id for timer in claimed) == ["c0", "c1", "c2", "c3"]


async def test_a_due_timer_is_claimed_by_exactly_one_replica(etcd_server: EtcdCluster) -> None:
    config = config_for(etcd_server)  # one deployment: one key prefix
    clients = [EtcdClient(config) for _ in range(3)]
    try:
        replicas = [_replica(client, "100ms") for client in clients]
        ids = [f"s{i}" for i in range(60)]
        for i, sid in enumerate(ids):
            await replicas[i % 3][0].start(sid)
        now = time.time() + 1.0  # all of them are due by then
        claims = await asyncio.gather(*(queue.claim_due(now, 1000, 10.0) for _, queue in replicas))
    finally:
        for client in clients:
            await client.close()
    claimed = [timer.session_id for timers in claims for timer in timers]
    assert sorted(claimed) == sorted(ids)  # each exactly once


async def test_a_claim_whose_claimant_died_comes_due_again(etcd_server: EtcdCluster) -> None:
    config = config_for(etcd_server)  # one deployment: one key prefix
    async with EtcdClient(config) as first, EtcdClient(config) as second:
        manager, dying = _replica(first, "100ms")
        started = await manager.start("s")
        now = time.time() + 1.0
        (claimed,) = await dying.claim_due(now, 10, claim_ttl=5.0)  # and never done with
        other = EtcdTimerQueue(second)
        assert await other.claim_due(now, 10, 5.0) == []  # still claimed
        (again,) = await other.claim_due(now + 5.0 + 0.1, 10, 5.0)
    assert (again.session_id, again.revision, again.due) == ("s", started.state.revision, claimed.due)
