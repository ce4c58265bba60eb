"""The durable step over a real etcd: the store is also the lock service (two round trips a step)."""

from __future__ import annotations

import asyncio

from tests.sessions.flows import COUNTER, CountingTool, engine
from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.sessions import SessionManager


async def test_replicas_on_etcd_lose_and_duplicate_nothing(etcd_server: EtcdCluster) -> None:
    config = config_for(etcd_server)
    tool = CountingTool()
    dispatcher = InProcessDispatcher({"increment": tool})
    clients = [EtcdClient(config) for _ in range(2)]  # two server processes, one etcd
    try:
        for client in clients:
            await client.connect()
        replicas = [
            SessionManager(engine(COUNTER), EtcdStateStore(c), dispatcher=dispatcher) for c in clients
        ]
        async with asyncio.timeout(120):
            await replicas[0].start("s")
            await asyncio.gather(*(replicas[n % 2].navigate("s", f"go {n}") for n in range(32)))
            final = await replicas[1].get("s")
    finally:
        for client in clients:
            await client.close()
    assert final.state.context["n"] == 32 == tool.calls
    assert final.state.history == ["start", "ask"] + ["bump", "ask"] * 32
    assert all(replica.lock_count() == 0 for replica in replicas)
