"""A step whose save reached etcd but whose answer was lost (the member answering it
died), retried after other replicas stepped the same session: it must be known as
applied, not reported as a clean refusal (ABORTED tells the client to apply the
step again). Found by the member-kill system test: a token stored although its
request was answered LOCK_LOST.

The lost answer is made with an interceptor on the real etcd connection: the
transaction runs in etcd (or, for the opposite case, is never sent), then the
caller sees UNAVAILABLE, as when the member handling it dies before answering."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import grpc  # type: ignore[import-untyped]
import orjson
import pytest
from aetcd import rpc

from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from tests.support.waiting import eventually
from trellis.adapters.etcd import EtcdClient, EtcdConfig, EtcdStateStore
from trellis.adapters.etcd.client import prefix_end
from trellis.adapters.etcd.locker import EtcdLockHandle
from trellis.domain import State
from trellis.errors import BackendUnavailable, LockLost


class LoseOneAnswer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """The next transaction runs in etcd (``send``) or not, then ``meanwhile`` runs and
    the caller is told UNAVAILABLE; once."""

    def __init__(self) -> None:
        self.meanwhile: Callable[[], Awaitable[None]] | None = None
        self.send = True

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], call_details: Any, request: Any
    ) -> Any:
        method = call_details.method
        is_txn = (method.decode() if isinstance(method, bytes) else method).endswith("/Txn")
        if self.meanwhile is None or not is_txn:
            return await continuation(call_details, request)
        if self.send:
            await (await continuation(call_details, request))  # applied in etcd
        meanwhile, self.meanwhile = self.meanwhile, None
        await meanwhile()
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "member went away"
        )


class Replicas(NamedTuple):
    """Two replicas on one etcd: ours (``mine``), whose connection ``lose`` can drop an
    answer of, and another one's."""

    config: EtcdConfig
    lose: LoseOneAnswer
    ours: EtcdClient
    theirs: EtcdClient
    mine: EtcdStateStore
    other: EtcdStateStore


@contextlib.asynccontextmanager
async def two_replicas(cluster: EtcdCluster) -> AsyncIterator[Replicas]:
    config = config_for(cluster)
    lose = LoseOneAnswer()
    async with EtcdClient(config, interceptors=[lose]) as ours, EtcdClient(config) as theirs:
        yield Replicas(config, lose, ours, theirs, EtcdStateStore(ours), EtcdStateStore(theirs))


def _at(state: State, node: str) -> State:
    moved = state.clone()
    moved.current_node_id = node
    return moved


async def _step(store: EtcdStateStore, node: str) -> int:
    """Another replica's whole step: lock, load, move to ``node``, save and unlock."""
    handle, loaded = await store.lock_and_load("s", 30)
    assert loaded is not None
    return await store.save_and_unlock(handle, "s", _at(loaded, node))


async def _pending_step(store: EtcdStateStore) -> tuple[EtcdLockHandle, State]:
    await store.save("s", State.new("s", "n0"), expected_revision=0)
    handle, loaded = await store.lock_and_load("s", 30)
    assert loaded is not None
    return handle, _at(loaded, "ours")


async def test_a_lost_answer_is_known_as_applied_although_other_steps_followed(
    etcd_server: EtcdCluster,
) -> None:
    async with two_replicas(etcd_server) as (config, lose, ours, _theirs, mine, other):
        handle, stepped = await _pending_step(mine)
        later: list[int] = []

        async def two_more_steps() -> None:
            later.append(await _step(other, "theirs-1"))
            later.append(await _step(other, "theirs-2"))

        lose.meanwhile = two_more_steps
        revision = await mine.save_and_unlock(handle, "s", stepped)
        assert revision < later[0] < later[1]
        at_ours = await ours.call("Range", rpc.RangeRequest(key=config.key("sessions/s"), revision=revision))
        assert orjson.loads(at_ours.kvs[0].value)["current_node_id"] == "ours"
        assert (await mine.load("s")).current_node_id == "theirs-2"


async def test_a_lost_answer_with_nobody_in_between_is_known_as_applied(etcd_server: EtcdCluster) -> None:
    config = config_for(etcd_server)
    lose = LoseOneAnswer()
    async with EtcdClient(config, interceptors=[lose]) as ours:
        store = EtcdStateStore(ours)
        handle, stepped = await _pending_step(store)

        async def nothing() -> None:
            return None

        lose.meanwhile = nothing
        revision = await store.save_and_unlock(handle, "s", stepped)
        stored = await store.load("s")
        assert (stored.current_node_id, stored.revision) == ("ours", revision)


async def test_a_save_that_never_reached_etcd_after_its_lock_was_lost_is_refused(
    etcd_server: EtcdCluster,
) -> None:
    async with two_replicas(etcd_server) as (_config, lose, _ours, theirs, mine, other):
        handle, stepped = await _pending_step(mine)

        async def lock_lost_then_another_step() -> None:
            await theirs.call("LeaseRevoke", rpc.LeaseRevokeRequest(ID=handle.lease.id))
            await _step(other, "theirs")

        lose.send, lose.meanwhile = False, lock_lost_then_another_step
        with pytest.raises(LockLost):
            await mine.save_and_unlock(handle, "s", stepped)
        assert (await mine.load("s")).current_node_id == "theirs"


async def test_a_lost_answer_whose_history_was_compacted_is_an_unknown_outcome(
    etcd_server: EtcdCluster,
) -> None:
    async with two_replicas(etcd_server) as (_config, lose, _ours, theirs, mine, other):
        handle, stepped = await _pending_step(mine)

        async def step_then_compact() -> None:
            revision = await _step(other, "theirs")
            await theirs.call("Compact", rpc.CompactionRequest(revision=revision, physical=True))

        lose.meanwhile = step_then_compact
        with pytest.raises(BackendUnavailable, match="unknown"):
            await mine.save_and_unlock(handle, "s", stepped)


async def test_a_lost_answer_of_a_step_that_queued_behind_another_holder_is_known_as_applied(
    etcd_server: EtcdCluster,
) -> None:
    """The case the member-kill test hit: the holder ahead of us in the queue saved after
    our lock key was created, so "the first write after our lock key" is theirs; ours is
    the first write after the version we loaded."""
    async with two_replicas(etcd_server) as (config, lose, ours, theirs, mine, other):
        await mine.save("s", State.new("s", "n0"), expected_revision=0)
        their_handle, their_loaded = await other.lock_and_load("s", 30)
        assert their_loaded is not None
        waiting = asyncio.ensure_future(mine.lock_and_load("s", 30))
        locks = config.key("locks/s/")

        async def queued() -> bool:
            found = await theirs.call("Range", rpc.RangeRequest(key=locks, range_end=prefix_end(locks)))
            return len(found.kvs) == 2

        await eventually(queued, "our lock key queued behind theirs")
        await other.save_and_unlock(their_handle, "s", _at(their_loaded, "before"))
        handle, loaded = await waiting
        assert loaded is not None and loaded.current_node_id == "before"

        async def one_more_step() -> None:
            await _step(other, "after")

        lose.meanwhile = one_more_step
        revision = await mine.save_and_unlock(handle, "s", _at(loaded, "ours"))
        at_ours = await ours.call("Range", rpc.RangeRequest(key=config.key("sessions/s"), revision=revision))
        assert orjson.loads(at_ours.kvs[0].value)["current_node_id"] == "ours"
        assert (await mine.load("s")).current_node_id == "after"


async def test_a_conditional_save_whose_lost_answer_was_followed_by_another_save_is_known_as_applied(
    etcd_server: EtcdCluster,
) -> None:
    """The same for StateStore.save with an expected revision (the StateStore service's
    conditional save, no lock): another writer saving after our landed attempt does
    not turn it into a conflict."""
    async with two_replicas(etcd_server) as (_config, lose, _ours, _theirs, mine, other):
        created = await mine.save("s", State.new("s", "n0"), expected_revision=0)
        later: list[int] = []

        async def another_save() -> None:
            stored = await other.load("s")
            later.append(await other.save("s", _at(stored, "theirs"), expected_revision=stored.revision))

        lose.meanwhile = another_save
        loaded = await mine.load("s")
        revision = await mine.save("s", _at(loaded, "ours"), expected_revision=created)
        assert created < revision < later[0]
        assert (await mine.load("s")).current_node_id == "theirs"
