"""Lost replies, retried with the same request ID: applied exactly once.

Real replicas (``trellis serve`` processes) on a real etcd; the client (the Python
SDK) reaches them through a TCP proxy that holds back a server's reply, so the step
is written to etcd while its reply never reaches the client. The check uses the
session's history: the counter flow appends one node per applied step and stores
each step's input, so a step applied twice would show up twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.etcd_system.deployment import Deployment
from tests.support.system_flows import counter_node, write_counter_flow
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.api.transport import ChannelOptions
from trellis.clients import Client
from trellis.domain import State

OPTIONS = {"lock_ttl": "10s", "entry": counter_node(0)}
# Each test runs with the SDK's steps as unary calls and over one Sessions.Steps stream.
both_ways = pytest.mark.parametrize("step_stream", [False, True], ids=["unary", "step-stream"])


async def _stored(deployment: Deployment, session_id: str) -> State:
    async with EtcdClient(deployment.config()) as client:
        return await EtcdStateStore(client).load(session_id)


async def _proxy_to(port: int) -> TcpProxy:
    proxy = TcpProxy("127.0.0.1", port)
    await proxy.start()
    return proxy


@both_ways
async def test_a_reply_lost_with_its_server_is_retried_on_another_and_applied_once(
    deployment: Deployment, tmp_path: Path, step_stream: bool
) -> None:
    await deployment.publish("counter", write_counter_flow(tmp_path / "flow", 10))
    first, second = deployment.replicas_for(2, "counter", options=OPTIONS)
    proxy = await _proxy_to(first.port)
    # The SDK as shipped, retrying on its own; backoff short so the retry is prompt.
    options = ChannelOptions(timeout=30.0, retries=8, backoff_base=0.05, backoff_cap=0.5)
    try:
        async with Client(proxy.endpoint, options=options, step_stream=step_stream) as client:
            started = await client.sessions.start("s")
            proxy.hold()
            step = asyncio.ensure_future(client.sessions.navigate("s", "once"))
            # Deterministic order: the step is in etcd and its reply is in the proxy...
            await eventually(
                lambda: _moved(deployment, started.state.revision), "the step was written to etcd", within=30
            )
            await eventually(lambda: proxy.held_bytes > 0, "the reply reached the proxy", within=30)
            # ...then its server dies before the reply was delivered; retries reach the other.
            proxy.target = ("127.0.0.1", second.port)
            first.kill()
            async with asyncio.timeout(60):
                result = await step
    finally:
        await proxy.cut()
    assert result.replayed  # answered by the second replica from the stored request ID
    stored = await _stored(deployment, "s")
    assert stored.history == [counter_node(0), counter_node(1)]
    assert stored.context == {"got_0": "once"}
    assert (result.state.revision, result.state.history) == (stored.revision, stored.history)


@both_ways
async def test_a_reply_lost_to_a_client_deadline_is_retried_and_applied_once(
    deployment: Deployment, tmp_path: Path, step_stream: bool
) -> None:
    await deployment.publish("counter", write_counter_flow(tmp_path / "flow", 10))
    (replica,) = deployment.replicas_for(1, "counter", options=OPTIONS)
    proxy = await _proxy_to(replica.port)
    try:
        options = ChannelOptions(timeout=2.0, retries=0)
        async with Client(proxy.endpoint, options=options, step_stream=step_stream) as client:
            started = await client.sessions.start("s")
            proxy.hold()
            # The deadline passes while the reply is held back: the caller cannot tell
            # whether the step was applied.
            with pytest.raises(TimeoutError):
                await client.sessions.navigate("s", "once", request_id="req-1")
            assert await _moved(deployment, started.state.revision)  # it was
            proxy.release()
            again = await client.sessions.navigate("s", "once", request_id="req-1")
            # A new request (a new ID) is a new step.
            after = await client.sessions.navigate("s", "twice")
    finally:
        await proxy.cut()
    assert again.replayed and again.state.history == [counter_node(0), counter_node(1)]
    assert not after.replayed
    stored = await _stored(deployment, "s")
    assert stored.history == [counter_node(i) for i in range(3)]
    assert stored.context == {"got_0": "once", "got_1": "twice"}


async def _moved(deployment: Deployment, revision: int) -> bool:
    return (await _stored(deployment, "s")).revision > revision
