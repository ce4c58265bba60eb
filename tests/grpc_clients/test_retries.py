"""Which calls the remote adapters retry on UNAVAILABLE: reads yes, writes never. The
server here is a real gRPC server whose StateStore answers UNAVAILABLE a set number of
times before it works, and counts the attempts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from trellis.adapters.grpc import ChannelOptions, RemoteChannel, RemoteStateStore
from trellis.api.v1 import store_pb2 as stpb
from trellis.api.v1 import store_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.domain import State
from trellis.errors import BackendUnavailable


@dataclass
class FlakyStore(store_pb2_grpc.StateStoreServicer):  # type: ignore[misc]
    failures: int = 0
    attempts: dict[str, int] = field(default_factory=dict)

    async def _flaky(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.attempts[method] = self.attempts.get(method, 0) + 1
        if self.attempts[method] <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")

    async def Load(self, request: stpb.LoadRequest, context: grpc.aio.ServicerContext) -> stpb.LoadResponse:
        await self._flaky("Load", context)
        state = pb.State(session_id=request.session_id, current_node_id="n", revision=7)
        return stpb.LoadResponse(state=state)

    async def Save(self, request: stpb.SaveRequest, context: grpc.aio.ServicerContext) -> stpb.SaveResponse:
        await self._flaky("Save", context)
        return stpb.SaveResponse(revision=8)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[FlakyStore, str]]:
    servicer = FlakyStore()
    server = grpc.aio.server()
    store_pb2_grpc.add_StateStoreServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


def fast(retries: int) -> ChannelOptions:
    return ChannelOptions(retries=retries, backoff_base=0.001, backoff_cap=0.01, timeout=10)


async def test_a_read_is_retried_until_it_works(flaky: tuple[FlakyStore, str]) -> None:
    servicer, target = flaky
    servicer.failures = 3
    store = RemoteStateStore(RemoteChannel(target, fast(retries=4)))
    try:
        state = await store.load("s")
    finally:
        await store.aclose()
    assert (state.current_node_id, state.revision) == ("n", 7)
    assert servicer.attempts["Load"] == 4


async def test_retries_are_bounded(flaky: tuple[FlakyStore, str]) -> None:
    servicer, target = flaky
    servicer.failures = 100
    store = RemoteStateStore(RemoteChannel(target, fast(retries=2)))
    try:
        with pytest.raises(BackendUnavailable, match="warming up"):
            await store.load("s")
    finally:
        await store.aclose()
    assert servicer.attempts["Load"] == 3


async def test_a_write_is_never_retried(flaky: tuple[FlakyStore, str]) -> None:
    servicer, target = flaky
    servicer.failures = 1
    store = RemoteStateStore(RemoteChannel(target, fast(retries=4)))
    try:
        with pytest.raises(BackendUnavailable):
            await store.save("s", State.new("s", "n"))
    finally:
        await store.aclose()
    assert servicer.attempts["Save"] == 1
