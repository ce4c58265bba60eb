"""EtcdGraphLoader and publishing beyond the contract: one publish is one change,
watches resume after a broken connection, a compacted watch reloads everything,
push/pull round trips and the command line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aetcd import rpc

from tests.support.etcd_process import EtcdCluster
from tests.support.tcp_proxy import TcpProxy
from trellis.adapters.etcd import EtcdClient, EtcdConfig, EtcdGraphLoader
from trellis.adapters.etcd.publish import main, publish, pull
from trellis.errors import GraphError, NodeDefinitionError
from trellis.ports.loader import GraphChange
from trellis.streams import QueueStream

FLOW = {
    "start.md": "---\nto: middle\n---\nHello\n",
    "middle.yaml": "content: Between\nto: modules/end\n",
    "modules/end.json": '{"content": "Bye"}',
    "tools.yaml": "tools:\n  - name: search\n",
}


def write_flow(directory: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


async def next_change(stream: QueueStream[GraphChange]) -> GraphChange:
    async with asyncio.timeout(15):
        return await anext(stream)


@contextlib.asynccontextmanager
async def watching(client: EtcdClient) -> AsyncIterator[tuple[EtcdGraphLoader, QueueStream[GraphChange]]]:
    """The "tour" graph's loader over ``client`` and a watch of it; both closed after."""
    loader = EtcdGraphLoader(client, "tour")
    stream = loader.watch()
    try:
        yield loader, stream
    finally:
        await stream.aclose()
        await loader.aclose()


@pytest_asyncio.fixture
async def proxied(
    etcd_server: EtcdCluster, etcd_config: EtcdConfig
) -> AsyncIterator[tuple[TcpProxy, EtcdConfig]]:
    """A proxy to the shared etcd and a configuration that goes through it."""
    host, port = etcd_server.endpoints[0].split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    try:
        yield proxy, dataclasses.replace(etcd_config, endpoints=(proxy.endpoint,))
    finally:
        await proxy.cut()


async def test_one_publish_is_one_change_naming_every_node_it_touched(
    etcd_client: EtcdClient, tmp_path: Path
) -> None:
    directory = write_flow(tmp_path, FLOW)
    await publish(etcd_client, "tour", directory)
    async with watching(etcd_client) as (loader, stream):
        assert await loader.list_nodes() == ["middle", "modules/end", "start", "tools"]
        write_flow(directory, {"start.md": "Hi\n", "modules/end.json": '{"content": "Ciao"}'})
        (directory / "middle.yaml").unlink()
        first = await publish(etcd_client, "tour", directory)
        write_flow(directory, {"extra.md": "More\n"})
        second = await publish(etcd_client, "tour", directory)

        change = await next_change(stream)
        assert change == GraphChange(frozenset({"start", "modules/end", "middle"}), first.revision)
        assert await next_change(stream) == GraphChange(frozenset({"extra"}), second.revision)
        assert (await loader.get_node("start")).content == "Hi\n"
        assert await loader.list_nodes() == ["extra", "modules/end", "start", "tools"]
        # Publishing the same directory again writes nothing.
        again = await publish(etcd_client, "tour", directory)
        assert again.changed == () and again.removed == ()


async def test_a_watch_resumes_after_the_connection_breaks(
    proxied: tuple[TcpProxy, EtcdConfig], etcd_client: EtcdClient, tmp_path: Path
) -> None:
    proxy, config = proxied
    directory = write_flow(tmp_path, FLOW)
    await publish(etcd_client, "tour", directory)
    async with EtcdClient(config) as through_proxy, watching(through_proxy) as (loader, stream):
        assert (await loader.get_node("start")).content == "Hello\n"
        await proxy.cut()
        write_flow(directory, {"start.md": "Changed while away\n"})
        missed = await publish(etcd_client, "tour", directory)
        await proxy.start()
        change = await next_change(stream)
        assert change == GraphChange(frozenset({"start"}), missed.revision)
        assert (await loader.get_node("start")).content == "Changed while away\n"


async def test_a_watch_behind_compaction_reloads_the_whole_graph(
    proxied: tuple[TcpProxy, EtcdConfig], etcd_client: EtcdClient, tmp_path: Path
) -> None:
    proxy, config = proxied
    directory = write_flow(tmp_path, FLOW)
    await publish(etcd_client, "tour", directory)
    async with EtcdClient(config) as through_proxy, watching(through_proxy) as (loader, stream):
        assert (await loader.get_node("middle")).content == "Between"
        await proxy.cut()
        write_flow(directory, {"middle.yaml": "content: Moved on\n"})
        await publish(etcd_client, "tour", directory)
        (directory / "tools.yaml").unlink()
        latest = await publish(etcd_client, "tour", directory)
        await etcd_client.call("Compact", rpc.CompactionRequest(revision=latest.revision, physical=True))
        await proxy.start()
        change = await next_change(stream)
        assert change.node_ids == frozenset()  # anything may have changed
        assert change.revision >= latest.revision
        assert (await loader.get_node("middle")).content == "Moved on"
        assert await loader.list_nodes() == ["middle", "modules/end", "start"]
        # ...and the watch carries on from there.
        write_flow(directory, {"start.md": "After\n"})
        after = await publish(etcd_client, "tour", directory)
        assert await next_change(stream) == GraphChange(frozenset({"start"}), after.revision)


async def test_an_invalid_flow_is_not_published(etcd_client: EtcdClient, tmp_path: Path) -> None:
    directory = write_flow(tmp_path, FLOW)
    await publish(etcd_client, "tour", directory)
    write_flow(directory, {"start.md": "---\nwait: 'yes'\n---\nbroken\n"})
    with pytest.raises(NodeDefinitionError) as caught:
        await publish(etcd_client, "tour", directory)
    assert caught.value.field == "wait" and "start.md" in str(caught.value)
    write_flow(directory, {"start.md": "fine\n", "start.json": '{"content": "twin"}'})
    with pytest.raises(GraphError, match="collision detected: node ID 'start'"):
        await publish(etcd_client, "tour", directory)
    loader = EtcdGraphLoader(etcd_client, "tour")
    assert (await loader.get_node("start")).content == "Hello\n"  # still the last good version
    await loader.aclose()


async def test_pull_writes_back_the_published_files(etcd_client: EtcdClient, tmp_path: Path) -> None:
    await publish(etcd_client, "tour", write_flow(tmp_path / "src", FLOW))
    written = await pull(etcd_client, "tour", tmp_path / "copy")
    assert written == sorted(FLOW)
    for rel, text in FLOW.items():
        assert (tmp_path / "copy" / rel).read_text() == text
    with pytest.raises(GraphError, match="not published"):
        await pull(etcd_client, "nothing-here", tmp_path / "none")


def test_the_command_line_pushes_and_pulls(
    etcd_config: EtcdConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoints = ",".join(etcd_config.endpoints)
    source = write_flow(tmp_path / "src", FLOW)
    common = ["--etcd", endpoints, "--graph", "cli", "--prefix", etcd_config.prefix]
    assert main(["push", str(source), *common]) == 0
    assert "published graph 'cli': 4 nodes, 4 changed" in capsys.readouterr().out
    assert main(["push", str(source), *common]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert main(["pull", str(tmp_path / "out"), *common]) == 0
    assert (tmp_path / "out" / "modules" / "end.json").read_text() == FLOW["modules/end.json"]
    write_flow(source, {"middle.yaml": "wait: maybe\n"})
    assert main(["push", str(source), *common]) == 1
    error = capsys.readouterr().err
    assert "invalid node" in error and "middle.yaml" in error and "wait" in error
    assert main(["push", str(source), "--graph", "cli"]) == 2
