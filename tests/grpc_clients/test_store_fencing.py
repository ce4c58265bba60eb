"""The fencing token crosses the StateStore wire: the service refuses a save under a
token older than one a save of the session was already stored under, in the same
conditional write; request IDs travel beside the state. A real server (in process)
over a MemoryStore, reached with the remote adapter and with the raw stub."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.support.grpc_server import failure
from tests.support.servers import Served, serving
from trellis.adapters.grpc import RemoteChannel, RemoteStateStore
from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_store import MemoryStore
from trellis.api.v1 import store_pb2 as spb
from trellis.api.v1 import store_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.domain import AppliedRequest, State
from trellis.errors import ConflictError, LockLost


@pytest.fixture
async def served() -> AsyncIterator[tuple[Served, MemoryStore]]:
    store = MemoryStore()
    async with serving(store=store) as served:
        yield served, store


def _save(token: int, node: str, **fields: object) -> spb.SaveRequest:
    request = spb.SaveRequest(session_id="s", state=pb.State(session_id="s", current_node_id=node), **fields)
    request.fence.key, request.fence.token = "s", token
    return request


async def test_a_save_under_an_older_token_is_refused_by_the_service(
    served: tuple[Served, MemoryStore],
) -> None:
    server, store = served
    async with grpc.aio.insecure_channel(server.internal_target) as channel:
        stub = store_pb2_grpc.StateStoreStub(channel)
        first = await stub.Save(_save(5, "by-5"))
        # The holder of token 3 lost its lock to token 5 but does not know it yet: its write
        # (unconditional, so no revision compare would stop it) must not land.
        code, reason, message = await failure(stub.Save(_save(3, "by-3")))
        assert (code, reason) == (grpc.StatusCode.ABORTED, "LOCK_LOST")
        assert "token 3" in message and "token 5" in message
        stored = await store.load("s")
        assert (stored.current_node_id, stored.revision) == ("by-5", first.revision)
        # The current holder and later ones write on.
        await stub.Save(_save(5, "by-5-again", expected_revision=first.revision))
        await stub.Save(_save(9, "by-9"))
        assert (await store.load("s")).fence_token == 9
        code, reason, _ = await failure(stub.Save(_save(0, "no-token")))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")


async def test_a_fenced_save_still_compares_the_revision(served: tuple[Served, MemoryStore]) -> None:
    server, store = served
    async with grpc.aio.insecure_channel(server.internal_target) as channel:
        stub = store_pb2_grpc.StateStoreStub(channel)
        first = await stub.Save(_save(5, "a", expected_revision=0))
        code, reason, _ = await failure(stub.Save(_save(6, "b", expected_revision=first.revision + 7)))
        assert (code, reason) == (grpc.StatusCode.ABORTED, "REVISION_CONFLICT")
        assert (await store.load("s")).current_node_id == "a"


async def test_the_remote_store_sends_its_lock_and_request_ids(served: tuple[Served, MemoryStore]) -> None:
    server, store = served
    locker = LocalLocker()
    remote = RemoteStateStore(RemoteChannel(server.internal_target))
    try:
        stale = await locker.acquire("s", 30)
        await stale.unlock()
        current = await locker.acquire("s", 30)
        state = State.new("s", "n0")
        state.requests = (AppliedRequest("req-1", "abc"),)
        revision = await remote.save("s", state, expected_revision=0, fence=current)
        loaded = await remote.load("s")
        assert loaded.revision == revision and loaded.requests == (AppliedRequest("req-1", "abc"),)
        assert (await store.load("s")).fence_token == current.token
        # A handle this process knows to be released is refused before the call.
        with pytest.raises(LockLost):
            await remote.save("s", state, fence=stale)
        with pytest.raises(ConflictError):
            await remote.save("s", state, expected_revision=0, fence=current)
    finally:
        await remote.aclose()


async def test_hostile_request_ids_on_the_store_wire_are_refused(served: tuple[Served, MemoryStore]) -> None:
    server, store = served
    async with grpc.aio.insecure_channel(server.internal_target) as channel:
        stub = store_pb2_grpc.StateStoreStub(channel)
        many = [spb.AppliedRequest(id=f"r{n}", digest="d") for n in range(17)]
        for requests in (many, [spb.AppliedRequest(id="a b", digest="d")], [spb.AppliedRequest(digest="d")]):
            request = spb.SaveRequest(
                session_id="s", state=pb.State(session_id="s", current_node_id="n"), requests=requests
            )
            code, _, message = await failure(stub.Save(request))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "request" in message
        assert (await store.list()).session_ids == []
