"""The remote adapters' transport: watch reconnects, token, mutual TLS through grpc:// URLs,
deadlines and an unreachable server, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from tests.support.pki import make_pki
from tests.support.requirements import missing
from tests.support.servers import serving
from trellis.adapters.grpc import (
    ChannelOptions,
    RemoteChannel,
    RemoteDispatcher,
    RemoteGraphLoader,
    RemoteStateStore,
)
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.memory_loader import MemoryLoader
from trellis.domain import JSONValue, State, ToolCall
from trellis.errors import BackendUnavailable, ConfigError, Unauthenticated
from trellis.plugins import BuildContext, build
from trellis.ports.loader import GraphChange
from trellis.server.config import ServerConfig

BOUND = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def next_change(stream: object, wanted: str | None) -> GraphChange:
    """The next change naming ``wanted`` (None: the next empty "anything changed" one)."""
    async with asyncio.timeout(BOUND):
        while True:
            change = await anext(stream)  # type: ignore[call-overload]
            assert isinstance(change, GraphChange)
            if wanted is None and not change.node_ids:
                return change
            if wanted is not None and wanted in change.node_ids:
                return change


async def test_a_remote_watch_resumes_after_the_server_restarts() -> None:
    port = free_port()
    first = MemoryLoader([{"id": "start", "content": "one"}])
    async with serving(loader=first, config=ServerConfig(listen=f"127.0.0.1:{port}")) as served:
        listen = f"127.0.0.1:{served.server.port}"
        loader = RemoteGraphLoader(RemoteChannel(listen, ChannelOptions(backoff_cap=0.2)))
        stream = loader.watch()
        for attempt in range(100):  # the stream opens asynchronously: write until it reports
            first.put({"id": "warm", "content": str(attempt)})
            try:
                async with asyncio.timeout(0.2):
                    await anext(stream)
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("the watch never reported a change")
    first.close()
    # Same port, a new server process-equivalent with a different graph.
    second = MemoryLoader([{"id": "start", "content": "two"}])
    try:
        async with serving(loader=second, config=ServerConfig(listen=listen)):
            # Changes may have been missed while the server was away: "anything may have changed".
            await next_change(stream, None)
            assert (await loader.get_node("start")).content == "two"
            second.put({"id": "later", "content": "after the restart"})
            await next_change(stream, "later")
    finally:
        second.close()
        await stream.aclose()
        await loader.aclose()


async def test_a_closed_loader_ends_its_watch() -> None:
    async with serving() as served:
        loader = RemoteGraphLoader(RemoteChannel(served.target))
        stream = loader.watch()
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)
        await loader.aclose()
        async with asyncio.timeout(BOUND):
            with pytest.raises(StopAsyncIteration):
                await waiting


async def test_token_and_mutual_tls_through_grpc_urls(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        missing("the openssl command (to make certificates) is not installed")
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "token").write_text("# client token\nsesame\n", encoding="utf-8")
    config = ServerConfig(
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
        tls_client_ca=str(pki / "ca.pem"),
        token="sesame",
    )
    async with serving(config=config) as served:
        ctx = BuildContext()
        certs = f"ca={pki / 'ca.pem'}&cert={pki / 'client.pem'}&key={pki / 'client.key'}"
        internal = served.internal_target  # token and TLS hold on the internal listener too
        good = await build("store", f"grpc://{internal}?{certs}&token_file={tmp_path / 'token'}", ctx)
        store = good.value
        assert isinstance(store, RemoteStateStore)
        await store.save("s1", State.new("s1", "start"))
        assert (await store.load("s1")).current_node_id == "start"
        assert good.probe is not None
        await good.probe()
        no_token = await build("store", f"grpc://{served.internal_target}?{certs}&retries=0", ctx)
        with pytest.raises(Unauthenticated):
            await no_token.value.load("s1")
        # Without a client certificate the TLS handshake fails: the server is unreachable to it.
        ca_only = f"grpc://{served.internal_target}?ca={pki / 'ca.pem'}&retries=0&timeout=5s"
        no_cert = await build("store", ca_only, ctx)
        with pytest.raises(BackendUnavailable, match=served.internal_target):
            await no_cert.value.load("s1")
        for close in ctx.closers:
            await close()


@pytest.mark.parametrize(
    "url",
    ["grpc://nohost", "grpc://127.0.0.1:1?colour=red", "grpc://127.0.0.1:1?timeout=soon", "grpc://:99"],
)
async def test_bad_grpc_urls_are_config_errors_naming_the_problem(url: str) -> None:
    with pytest.raises(ConfigError, match="grpc"):
        await build("store", url, BuildContext())


async def test_a_dispatch_past_its_deadline_is_a_timeout_error_result() -> None:
    async def slow(args: dict[str, JSONValue]) -> JSONValue:
        await asyncio.sleep(30)
        return None

    async with serving(dispatcher=InProcessDispatcher({"slow": slow})) as served:
        remote = RemoteDispatcher(RemoteChannel(served.internal_target, ChannelOptions(timeout=0.3)))
        try:
            # The call is cancelled; a failed tool, so the node's on_error is taken.
            result = await remote.dispatch(ToolCall(id="c1", name="slow"))
            assert result.is_error and result.error_type == "Timeout" and "timed out" in result.error
            # The server is still fine afterwards.
            await remote.probe()
        finally:
            await remote.aclose()


async def test_an_unreachable_server_is_backend_unavailable_naming_it() -> None:
    target = f"127.0.0.1:{free_port()}"
    store = RemoteStateStore(RemoteChannel(target, ChannelOptions(retries=2, backoff_base=0.01, timeout=5)))
    try:
        with pytest.raises(BackendUnavailable, match=target):
            await store.load("anyone")
        with pytest.raises(BackendUnavailable):
            await store.save("anyone", State.new("anyone", "start"))
    finally:
        await store.aclose()


async def test_a_dispatcher_url_names_the_tools_it_serves() -> None:
    ctx = BuildContext()
    some = (await build("dispatcher", "grpc://127.0.0.1:1?tools=charge,refund", ctx)).value
    every = (await build("dispatcher", "grpc://127.0.0.1:1?tools=all", ctx)).value
    default = (await build("dispatcher", "grpc://127.0.0.1:1", ctx)).value
    assert some.serves("charge") and some.serves("refund") and not some.serves("ship")
    assert every.serves("ship") and default.serves("anything")
    with pytest.raises(ConfigError, match="tools="):
        await build("dispatcher", "grpc://127.0.0.1:1?tools=", ctx)
    for close in ctx.closers:
        await close()
