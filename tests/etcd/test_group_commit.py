"""Group commit: concurrent steps of different sessions share one etcd transaction, and
one session's refused write does not fail its neighbours'."""

from __future__ import annotations

import asyncio

from tests.support.etcd_counting import CountingInterceptor, state_with
from trellis.adapters.etcd import EtcdClient, EtcdConfig, EtcdStateStore
from trellis.ports.store import StepConflict

SESSIONS = 12


async def test_concurrent_writes_share_transactions_and_a_stale_one_fails_alone(
    etcd_config: EtcdConfig,
) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(etcd_config, interceptors=[counter]) as client:
        store = EtcdStateStore(client)
        ids = [f"s{n}" for n in range(SESSIONS)]
        for sid in ids:
            await store.save(sid, state_with(sid, n=0))
        states = [store.load_cached(sid) for sid in ids]
        assert all(state is not None for state in states)
        stale = states[5]
        assert stale is not None
        await EtcdStateStore(client).save("s5", state_with("s5", n="moved"))  # s5 moved on
        counter.methods.clear()

        async def write(index: int) -> int:
            state = states[index]
            assert state is not None
            state.context["n"] = index + 1
            return await store.save_if_unlocked(ids[index], state)

        async with asyncio.timeout(30):
            outcomes = await asyncio.gather(*(write(n) for n in range(SESSIONS)), return_exceptions=True)

    refused = outcomes[5]
    assert isinstance(refused, StepConflict) and not refused.locked
    assert refused.current is not None and refused.current.context == {"n": "moved"}
    for n, outcome in enumerate(outcomes):
        if n != 5:
            assert isinstance(outcome, int) and outcome > 0, (n, outcome)
    async with EtcdClient(etcd_config) as reader:
        stored = [await EtcdStateStore(reader).load(sid) for sid in ids]
    assert [s.context["n"] for s in stored] == [n + 1 if n != 5 else "moved" for n in range(SESSIONS)]
    # All went together; that batch, failed whole by the stale write, wrote nothing and
    # was re-issued write by write.
    assert counter.methods == ["/etcdserverpb.KV/Txn"] * (1 + SESSIONS)


async def test_a_batch_of_clean_writes_is_one_transaction(etcd_config: EtcdConfig) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(etcd_config, interceptors=[counter]) as client:
        store = EtcdStateStore(client)
        ids = [f"s{n}" for n in range(SESSIONS)]
        for sid in ids:
            await store.save(sid, state_with(sid, n=0))
        states = [store.load_cached(sid) for sid in ids]
        counter.methods.clear()

        async def write(index: int) -> int:
            state = states[index]
            assert state is not None
            state.context["n"] = index + 1
            return await store.save_if_unlocked(ids[index], state)

        async with asyncio.timeout(30):
            revisions = await asyncio.gather(*(write(n) for n in range(SESSIONS)))
    # Every write ready in the same event-loop iteration went in one transaction.
    assert counter.methods == ["/etcdserverpb.KV/Txn"]
    assert len(set(revisions)) == 1


async def test_a_lone_write_goes_at_once(etcd_config: EtcdConfig) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(etcd_config, interceptors=[counter]) as client:
        store = EtcdStateStore(client)
        revision = await store.save_if_unlocked("s", state_with("s"))
        assert counter.methods == ["/etcdserverpb.KV/Txn"] and revision > 0
