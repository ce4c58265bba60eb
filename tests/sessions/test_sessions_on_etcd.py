"""The durable step over a real etcd: the store is also the lock service, and an
uncontended step without a served tool commits in one transaction without the lock."""

from __future__ import annotations

import asyncio

import pytest
from aetcd import rpc

from tests.sessions.flows import COUNTER, CountingTool, chain, engine
from tests.support.etcd_counting import CountingInterceptor
from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.adapters.etcd.locker import lock_prefix
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.domain import Status
from trellis.sessions import SessionManager
from trellis.step_deadline import step_deadline


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


async def test_an_uncontended_step_is_one_etcd_transaction(etcd_server: EtcdCluster) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(config_for(etcd_server), interceptors=[counter]) as client:
        manager = SessionManager(engine(chain(5)), EtcdStateStore(client))
        await manager.start("s")
        for n in range(3):
            counter.methods.clear()
            result = await manager.navigate("s", f"input {n}")
            assert counter.methods == ["/etcdserverpb.KV/Txn"]
            assert result.state.current_node_id == f"c{n + 1}"
        stored = await EtcdStateStore(client).load("s")
        assert stored.revision == result.state.revision
        assert [stored.context[f"got_{i}"] for i in range(3)] == ["input 0", "input 1", "input 2"]
        # No lock key was ever put (a lock waiter's key would still be seen by this range).
        locks = lock_prefix(client, "s")
        response = await client.call(
            "Range", rpc.RangeRequest(key=locks, range_end=locks[:-1] + b"0", count_only=True)
        )
        assert response.count == 0


async def test_a_step_that_runs_a_tool_takes_the_lock_and_runs_it_once(etcd_server: EtcdCluster) -> None:
    counter = CountingInterceptor()
    tool = CountingTool()
    async with EtcdClient(config_for(etcd_server), interceptors=[counter]) as client:
        manager = SessionManager(
            engine(COUNTER), EtcdStateStore(client), dispatcher=InProcessDispatcher({"increment": tool})
        )
        await manager.start("s")
        await client.lease(30)  # granted once per process, not per step
        counter.methods.clear()
        result = await manager.navigate("s", "go")
        assert tool.calls == 1 and result.state.context["n"] == 1
        # The attempt without the lock stopped before the tool, wrote nothing, and the
        # step was redone under the lock: lock+load, then save+unlock.
        assert counter.methods == ["/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Txn"]
        assert result.state.history == ["start", "ask", "bump", "ask"]


async def test_steps_with_and_without_the_lock_race_on_one_session_and_lose_nothing(
    etcd_server: EtcdCluster,
) -> None:
    config = config_for(etcd_server)
    steps = 40
    async with EtcdClient(config) as one, EtcdClient(config) as two:
        flow = chain(steps + 1)
        optimistic = SessionManager(engine(flow), EtcdStateStore(one))
        locked = SessionManager(engine(flow), EtcdStateStore(two), optimistic=False)
        await optimistic.start("s")
        replicas = [optimistic, locked]
        async with asyncio.timeout(120):
            acks = await asyncio.gather(*(replicas[n % 2].navigate("s", f"t{n}") for n in range(steps)))
            final = (await locked.get("s")).state
    stored = [final.context[f"got_{i}"] for i in range(steps)]
    assert sorted(stored) == sorted(f"t{n}" for n in range(steps))  # each applied once, none lost
    assert final.current_node_id == f"c{steps}" and final.status is Status.ACTIVE
    # Each acknowledged step is stored at the position its answer named.
    for n, ack in enumerate(acks):
        position = int(ack.state.current_node_id[1:]) - 1
        assert stored[position] == f"t{n}"


async def test_a_step_without_the_lock_queues_behind_a_holder(etcd_server: EtcdCluster) -> None:
    config = config_for(etcd_server)
    async with EtcdClient(config) as one, EtcdClient(config) as two:
        manager = SessionManager(engine(chain(5)), EtcdStateStore(one))
        await manager.start("s")
        await manager.navigate("s", "first")  # the manager's cache now holds the session
        holder_store = EtcdStateStore(two)
        handle, held = await holder_store.lock_and_load("s", ttl=30)
        assert held is not None
        step = asyncio.create_task(manager.navigate("s", "after"))
        locks = lock_prefix(one, "s")
        async with asyncio.timeout(20):
            while True:  # the step found the lock held and queued for it
                response = await one.call(
                    "Range", rpc.RangeRequest(key=locks, range_end=locks[:-1] + b"0", count_only=True)
                )
                if response.count == 2:
                    break
                await asyncio.sleep(0.02)
        assert not step.done()
        held.context["got_1"] = "holder"
        held.current_node_id = "c2"
        held.history.append("c2")
        await holder_store.save_and_unlock(handle, "s", held)
        async with asyncio.timeout(20):
            result = await step
    # The step ran on the holder's write, not on the state it had cached.
    assert result.state.context["got_1"] == "holder" and result.state.context["got_2"] == "after"


async def test_an_error_computed_from_a_stale_cached_state_is_not_reported(etcd_server: EtcdCluster) -> None:
    flow = [
        {"id": "ask", "content": "Sure?", "input_type": "confirm", "save_to": "ok", "to": "name"},
        {"id": "name", "content": "Name?", "wait": True, "save_to": "name", "to": "done"},
        {"id": "done", "content": "Hi {{ .name }}", "wait": True},
    ]
    config = config_for(etcd_server)
    async with EtcdClient(config) as one, EtcdClient(config) as two:
        stale, other = (
            SessionManager(engine(flow), EtcdStateStore(one)),
            SessionManager(engine(flow), EtcdStateStore(two)),
        )
        await stale.start("s")  # its cache: the session at "ask", which wants yes or no
        await other.navigate("s", "yes")  # now at "name", which takes any text
        result = await stale.navigate("s", "Ada")  # not a confirmation, but no longer asked for one
    assert result.state.current_node_id == "done" and result.state.context == {"ok": "yes", "name": "Ada"}


async def test_a_step_without_the_lock_whose_callers_deadline_passed_is_not_saved(
    etcd_server: EtcdCluster,
) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(config_for(etcd_server), interceptors=[counter]) as client:
        manager = SessionManager(engine(chain(3)), EtcdStateStore(client))
        await manager.start("s")
        before = (await manager.get("s")).state
        counter.methods.clear()
        with step_deadline(0.0):  # passed by the time the step would save
            with pytest.raises(TimeoutError, match="nothing was saved"):
                await manager.navigate("s", "late")
        assert counter.methods == []  # not sent, and not retried under the lock either
        after = (await manager.get("s")).state
        assert after.revision == before.revision and after.context == {}
        with step_deadline(30.0):
            assert (await manager.navigate("s", "in time")).state.context == {"got_0": "in time"}
