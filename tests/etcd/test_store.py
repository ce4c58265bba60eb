"""EtcdStateStore beyond the contract: fencing, one-transaction steps, sizes, listing, TTL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aetcd import rpc

from tests.support.etcd_counting import CountingInterceptor, state_with
from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdConfig, EtcdLocker, EtcdStateStore
from trellis.adapters.etcd.client import prefix_end
from trellis.adapters.etcd.locker import EtcdLockHandle
from trellis.errors import ConflictError, LockLost, SessionNotFound, StateTooLarge
from trellis.ports.store import StepConflict


async def revoke(client: EtcdClient, handle: EtcdLockHandle) -> None:
    """What etcd does when a holder's lease runs out: every key under it goes."""
    await client.call("LeaseRevoke", rpc.LeaseRevokeRequest(ID=handle.lease.id))


async def test_a_holder_whose_lease_was_revoked_cannot_write(etcd_config: EtcdConfig) -> None:
    async with EtcdClient(etcd_config) as stale_client, EtcdClient(etcd_config) as live_client:
        stale_store, live_store = EtcdStateStore(stale_client), EtcdStateStore(live_client)
        await live_store.save("s", state_with("s", v=0))
        stale_handle, stale_state = await stale_store.lock_and_load("s", ttl=30)
        assert stale_state is not None and stale_state.context == {"v": 0}
        await revoke(live_client, stale_handle)  # the stale holder "paused" past its TTL

        async with asyncio.timeout(10):
            handle, state = await live_store.lock_and_load("s", ttl=30)
        assert state is not None
        assert handle.token > stale_handle.token
        state.context["v"] = 2
        newer = await live_store.save_and_unlock(handle, "s", state)

        stale_state.context["v"] = 1
        with pytest.raises(LockLost):
            await stale_store.save_and_unlock(stale_handle, "s", stale_state)
        with pytest.raises(LockLost):
            await stale_store.save("s", stale_state, fence=stale_handle)
        stored = await live_store.load("s")
        assert stored.context == {"v": 2} and stored.revision == newer


async def test_a_save_on_a_stale_revision_conflicts_and_still_releases_the_lock(
    etcd_client: EtcdClient,
) -> None:
    store = EtcdStateStore(etcd_client)
    first = await store.save("s", state_with("s", v=1))
    handle, state = await store.lock_and_load("s", ttl=30)
    assert state is not None and state.revision == first
    other = await store.save("s", state_with("s", v="other"), expected_revision=first)
    state.context["v"] = 2
    with pytest.raises(ConflictError, match=str(other)):
        await store.save_and_unlock(handle, "s", state)
    assert not handle.held()
    async with asyncio.timeout(5):  # the lock was released despite the conflict
        again, latest = await store.lock_and_load("s", ttl=30)
    assert latest is not None and latest.context == {"v": "other"}
    await store.save_and_unlock(again, "s", None)
    with pytest.raises(ConflictError):
        await store.save("s", state_with("s", v=3), expected_revision=first)


async def test_creating_a_session_through_a_step(etcd_client: EtcdClient) -> None:
    store = EtcdStateStore(etcd_client)
    handle, state = await store.lock_and_load("new", ttl=30)
    assert state is None
    revision = await store.save_and_unlock(handle, "new", state_with("new", hello="world"))
    loaded = await store.load("new")
    assert loaded.revision == revision and loaded.context == {"hello": "world"}
    # A second creation from a stale "does not exist" read conflicts.
    with pytest.raises(ConflictError):
        await store.save("new", state_with("new"), expected_revision=0)


async def test_an_uncontended_step_costs_two_round_trips(etcd_config: EtcdConfig) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(etcd_config, interceptors=[counter]) as client:
        store = EtcdStateStore(client)
        await store.save("s", state_with("s", n=0))
        await client.lease(30)  # once per process, not per step
        watches_before = len(client.watches._subs)
        counter.methods.clear()

        handle, state = await store.lock_and_load("s", ttl=30)
        assert state is not None
        state.context["n"] = 1
        await store.save_and_unlock(handle, "s", state)

        assert counter.methods == ["/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Txn"]
        assert len(client.watches._subs) == watches_before
        assert (await store.load("s")).context == {"n": 1}


async def test_concurrent_steps_on_one_session_lose_no_update(etcd_config: EtcdConfig) -> None:
    async with EtcdClient(etcd_config) as one, EtcdClient(etcd_config) as two:
        stores = [EtcdStateStore(one), EtcdStateStore(two)]
        await stores[0].save("counter", state_with("counter", n=0))

        async def step(store: EtcdStateStore) -> None:
            handle, state = await store.lock_and_load("counter", ttl=30)
            assert state is not None
            state.context["n"] += 1
            await asyncio.sleep(0)
            await store.save_and_unlock(handle, "counter", state)

        async with asyncio.timeout(30):
            await asyncio.gather(*(step(stores[n % 2]) for n in range(30)))
        assert (await stores[0].load("counter")).context == {"n": 30}


async def test_a_cancelled_step_waiter_leaves_no_trace(etcd_client: EtcdClient) -> None:
    store = EtcdStateStore(etcd_client)
    holder, _ = await store.lock_and_load("s", ttl=30)
    waiter = asyncio.create_task(store.lock_and_load("s", ttl=30))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await store.save_and_unlock(holder, "s", state_with("s"))
    async with asyncio.timeout(5):
        handle, state = await store.lock_and_load("s", ttl=30)
    assert state is not None
    await store.save_and_unlock(handle, "s", None)


async def test_the_locker_and_the_step_store_share_the_session_lock(etcd_client: EtcdClient) -> None:
    store = EtcdStateStore(etcd_client)
    held = await EtcdLocker(etcd_client).acquire("s", ttl=30)
    step = asyncio.create_task(store.lock_and_load("s", ttl=30))
    await asyncio.sleep(0.2)
    assert not step.done()
    await held.unlock()
    async with asyncio.timeout(5):
        handle, _ = await step
    await store.save_and_unlock(handle, "s", None)


async def test_a_state_too_large_for_etcd_is_refused_before_sending(etcd_client: EtcdClient) -> None:
    store = EtcdStateStore(etcd_client)
    big = state_with("big", blob="x" * (etcd_client.config.max_request_bytes + 1))
    with pytest.raises(StateTooLarge, match="big"):
        await store.save("big", big)
    with pytest.raises(SessionNotFound):
        await store.load("big")
    handle, _ = await store.lock_and_load("big", ttl=30)
    with pytest.raises(StateTooLarge):
        await store.save_and_unlock(handle, "big", big)
    assert not handle.held()
    async with asyncio.timeout(5):
        again, _ = await store.lock_and_load("big", ttl=30)
    await store.save_and_unlock(again, "big", None)
    # Just under the limit still fits.
    fits = state_with("fits", blob="x" * (etcd_client.config.max_request_bytes - 4096))
    assert await store.save("fits", fits) > 0


async def test_sessions_expire_after_their_ttl(etcd_config: EtcdConfig) -> None:
    async with EtcdClient(etcd_config) as client:
        store = EtcdStateStore(client, session_ttl=1)
        await store.save("brief", state_with("brief"))
        assert (await store.list()).session_ids == ["brief"]
        for _ in range(200):  # bounded: at most ttl + window + etcd's expiry check
            if not (await store.list()).session_ids:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(SessionNotFound):
            await store.load("brief")


async def test_a_hundred_thousand_sessions_are_listed_by_key_only(private_etcd: EtcdCluster) -> None:
    total = 100_000
    ids = sorted(f"s{n:06d}" for n in range(total))
    etcd_config = config_for(private_etcd)
    async with EtcdClient(etcd_config) as client:
        prefix = etcd_config.key("sessions") + b"/"
        big_value = b"v" * 1000  # values are never read: 100 MB would not fit one answer anyway

        async def put_batch(batch: list[str]) -> None:
            ops = [
                rpc.RequestOp(request_put=rpc.PutRequest(key=prefix + s.encode(), value=big_value))
                for s in batch
            ]
            await client.call("Txn", rpc.TxnRequest(success=ops))

        batches = [ids[i : i + 100] for i in range(0, total, 100)]
        for start in range(0, len(batches), 20):
            await asyncio.gather(*(put_batch(b) for b in batches[start : start + 20]))

        store = EtcdStateStore(client)
        everything = await store.list()
        assert everything.session_ids == ids and everything.next_page_token == ""
        listed: list[str] = []
        token = ""
        for _ in range(total // 7000 + 2):
            page = await store.list(page_size=7000, page_token=token)
            listed.extend(page.session_ids)
            token = page.next_page_token
            if not token:
                break
        assert listed == ids


async def test_stores_keep_working_while_a_cluster_member_is_down(etcd_cluster3: EtcdCluster) -> None:
    async with EtcdClient(config_for(etcd_cluster3)) as client:
        store = EtcdStateStore(client)
        await store.save("s", state_with("s", n=0))
        for victim in etcd_cluster3.members[:2]:
            victim.kill()
            for _ in range(5):
                async with asyncio.timeout(10):
                    handle, state = await store.lock_and_load("s", ttl=5)
                    assert state is not None
                    state.context["n"] += 1
                    await store.save_and_unlock(handle, "s", state)
            etcd_cluster3.restart(victim)
        assert (await store.load("s")).context == {"n": 10}


# --- steps without the lock (OptimisticStepStore) ---------------------------------------


async def test_a_write_without_the_lock_is_refused_while_the_lock_is_held_or_the_session_moved(
    etcd_config: EtcdConfig,
) -> None:
    async with EtcdClient(etcd_config) as ours, EtcdClient(etcd_config) as theirs:
        store, holder = EtcdStateStore(ours), EtcdStateStore(theirs)
        first = await store.save("s", state_with("s", v=0))
        cached = store.load_cached("s")
        assert cached is not None and cached.revision == first

        handle, held = await holder.lock_and_load("s", ttl=30)
        assert held is not None
        cached.context["v"] = "unlocked"
        with pytest.raises(StepConflict) as refused:
            await store.save_if_unlocked("s", cached)
        assert refused.value.locked
        assert (await store.load("s")).revision == first  # nothing written

        held.context["v"] = "holder"
        second = await holder.save_and_unlock(handle, "s", held)
        with pytest.raises(StepConflict) as moved:
            await store.save_if_unlocked("s", cached)  # still conditioned on ``first``
        assert not moved.value.locked
        current = moved.value.current
        assert current is not None and current.revision == second and current.context == {"v": "holder"}
        assert (await store.load("s")).context == {"v": "holder"}
        # The refusal read the current state: the retry from it commits.
        current.context["v"] = "unlocked"
        third = await store.save_if_unlocked("s", current)
        assert third > second and (await holder.load("s")).context == {"v": "unlocked"}


async def test_creating_a_session_without_the_lock_happens_once(etcd_client: EtcdClient) -> None:
    store = EtcdStateStore(etcd_client)
    assert await store.load_unlocked("new") is None
    created = await store.save_if_unlocked("new", state_with("new", n=1))  # revision 0: must not exist
    with pytest.raises(StepConflict) as again:
        await store.save_if_unlocked("new", state_with("new", n=2))
    assert again.value.current is not None and again.value.current.revision == created
    assert (await store.load("new")).context == {"n": 1}


async def distinct_keys_written(client: EtcdClient, since: int) -> set[bytes]:
    """Every key put or deleted under the client's prefix after revision ``since``, read back
    from etcd's history with a watch (a deleted key still costs etcd until compaction)."""
    prefix = client.config.key("")
    now = (await client.call("Range", rpc.RangeRequest(key=prefix, count_only=True))).header.revision
    seen: set[bytes] = set()
    done = asyncio.Event()

    def on_events(events: Any, revision: int) -> None:
        seen.update(event.kv.key for event in events)
        if any(event.kv.mod_revision >= now for event in events):
            done.set()

    def on_resync(revision: int) -> None:
        return None

    sub = await client.watches.subscribe(prefix, prefix_end(prefix), since + 1, on_events, on_resync)
    try:
        async with asyncio.timeout(60):
            await done.wait()
    finally:
        await client.watches.unsubscribe(sub)
    return seen


async def test_ten_thousand_steps_on_one_session_leave_no_keys_behind(etcd_client: EtcdClient) -> None:
    """Half of the steps without the lock, half under it (as steps that run tools are):
    the lock's key is named per process lease, so 5,000 locked steps reuse one name."""
    store = EtcdStateStore(etcd_client)
    await etcd_client.lease(30)
    start = await store.save("s", state_with("s", n=0))
    state = store.load_cached("s")
    assert state is not None
    async with asyncio.timeout(600):
        for n in range(1, 10_001):
            if n % 2:
                state.context["n"] = n
                state.revision = await store.save_if_unlocked("s", state)
            else:
                handle, loaded = await store.lock_and_load("s", ttl=30)
                assert loaded is not None and loaded.context["n"] == n - 1
                loaded.context["n"] = n
                state = loaded
                state.revision = await store.save_and_unlock(handle, "s", loaded)
    assert (await store.load("s")).context == {"n": 10_000}
    keys = await distinct_keys_written(etcd_client, start)
    locks = etcd_client.config.key("locks")
    assert store._key("s") in keys
    assert len([key for key in keys if key.startswith(locks)]) == 1, sorted(keys)[:5]
    assert len(keys) == 2
