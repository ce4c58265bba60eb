"""A step whose save reached etcd but whose answer was lost (the member answering it
died) must not be reported as a clean refusal when another replica has stepped the
session since: the client would retry a step that was applied (found by the
member-kill system test as a token stored although its request got ABORTED).

The lost answer is made with an interceptor on the real etcd connection: the
transaction runs in etcd, then the caller sees UNAVAILABLE, as when the member
that committed it dies before answering."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from tests.etcd.conftest import config_for
from tests.etcd.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.domain import State
from trellis.errors import BackendUnavailable


class LoseOneAnswer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Lets the next transaction run in etcd, then runs ``meanwhile`` and reports the
    call as UNAVAILABLE, once."""

    def __init__(self) -> None:
        self.meanwhile: Callable[[], Awaitable[None]] | None = None

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], call_details: Any, request: Any
    ) -> Any:
        call = await continuation(call_details, request)
        method = call_details.method
        if self.meanwhile is None or not (method.decode() if isinstance(method, bytes) else method).endswith(
            "/Txn"
        ):
            return call
        await call  # applied in etcd
        meanwhile, self.meanwhile = self.meanwhile, None
        await meanwhile()
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "member went away"
        )


def _state(session_id: str, node: str) -> State:
    return State.new(session_id, node)


async def test_a_lost_answer_after_which_another_replica_stepped_is_not_a_clean_refusal(
    etcd_server: EtcdCluster,
) -> None:
    config = config_for(etcd_server)
    lose = LoseOneAnswer()
    async with EtcdClient(config, interceptors=[lose]) as ours, EtcdClient(config) as theirs:
        mine, other = EtcdStateStore(ours), EtcdStateStore(theirs)
        await mine.save("s", _state("s", "n0"), expected_revision=0)

        handle, loaded = await mine.lock_and_load("s", 30)
        assert loaded is not None
        stepped = loaded.clone()
        stepped.current_node_id = "ours"

        async def other_replica_steps() -> None:
            their_handle, theirs_loaded = await other.lock_and_load("s", 30)
            assert theirs_loaded is not None and theirs_loaded.current_node_id == "ours"
            after = theirs_loaded.clone()
            after.current_node_id = "theirs"
            await other.save_and_unlock(their_handle, "s", after)

        lose.meanwhile = other_replica_steps
        # Our write was applied (the other replica saw it): whatever we report, it must not
        # be ABORTED-class (LockLost / ConflictError), which tells the client "not applied".
        with pytest.raises(BackendUnavailable, match="unknown"):
            await mine.save_and_unlock(handle, "s", stepped)
        assert (await mine.load("s")).current_node_id == "theirs"


async def test_a_lost_answer_with_nobody_in_between_is_recognised_as_applied(
    etcd_server: EtcdCluster,
) -> None:
    config = config_for(etcd_server)
    lose = LoseOneAnswer()
    async with EtcdClient(config, interceptors=[lose]) as ours:
        store = EtcdStateStore(ours)
        await store.save("s", _state("s", "n0"), expected_revision=0)
        handle, loaded = await store.lock_and_load("s", 30)
        assert loaded is not None
        stepped = loaded.clone()
        stepped.current_node_id = "ours"

        async def nothing() -> None:
            return None

        lose.meanwhile = nothing
        revision = await store.save_and_unlock(handle, "s", stepped)
        stored = await store.load("s")
        assert (stored.current_node_id, stored.revision) == ("ours", revision)
