"""Hot reload across replicas: ``trellis graph push`` of a changed flow while clients
step sessions; every replica serves the new version, and no step is lost meanwhile."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from aetcd import rpc

from tests.etcd_system.deployment import Deployment, channels
from tests.etcd_system.stepping import Ledger, check_counter, step_until_acked
from tests.support.replicas import ROOT
from tests.support.system_flows import counter_node, write_counter_flow
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually
from trellis.adapters.etcd import EtcdClient
from trellis.adapters.etcd.publish import publish
from trellis.api.v1 import graph_pb2, graph_pb2_grpc, sessions_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb

LENGTH = 60


async def _push(deployment: Deployment, directory: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trellis.cli.main",
        "graph",
        "push",
        str(directory),
        "--etcd",
        ",".join(deployment.cluster.endpoints),
        "--graph",
        "counter",
        "--prefix",
        deployment.prefix,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_a_pushed_flow_is_served_by_every_replica_while_clients_run(
    deployment: Deployment, tmp_path: Path
) -> None:
    await deployment.publish("counter", write_counter_flow(tmp_path / "v1", LENGTH, banner="old"))
    replicas = deployment.replicas_for(3, "counter", options={"entry": counter_node(0)})
    ids = ["h0", "h1"]
    ledgers = {sid: Ledger() for sid in ids}
    stop = asyncio.Event()
    async with channels(replicas) as opened:
        stubs = [sessions_pb2_grpc.SessionsStub(c) for c in opened]
        loaders = [graph_pb2_grpc.GraphLoaderStub(c) for c in opened]
        for sid in ids:
            await stubs[0].Start(spb.SessionsStartRequest(session_id=sid), timeout=20)

        async def client(n: int) -> None:
            rng = random.Random(n)
            for k in range(LENGTH // 4 - 1):  # bounded: 4 clients share 2 sessions of LENGTH nodes
                if stop.is_set():
                    return
                sid = ids[n % len(ids)]
                outcome = await step_until_acked(stubs, sid, f"c{n}-{k}", ledgers[sid], rng)
                assert outcome.code is None, outcome
                await asyncio.sleep(0.01)

        clients = [asyncio.ensure_future(client(n)) for n in range(4)]
        try:
            out = await _push(deployment, write_counter_flow(tmp_path / "v2", LENGTH, banner="new"))
            assert f"{LENGTH + 1} changed" in out

            async def all_new() -> bool:
                nodes = await asyncio.gather(
                    *(
                        s.GetNode(graph_pb2.GetNodeRequest(node_id=counter_node(LENGTH)), timeout=10)
                        for s in loaders
                    )
                )
                return all(n.node.content.strip() == "new end" for n in nodes)

            await eventually(all_new, "every replica serves the pushed flow", within=30)
        finally:
            stop.set()
            await asyncio.gather(*clients)
        # A session's rendered text comes from the new version too, through any replica.
        for stub in stubs:
            step = (await stub.Get(spb.SessionsGetRequest(session_id="h0"), timeout=20)).step
            assert any(a.render_content.startswith("new ") for a in step.actions), step.actions
        for sid in ids:
            state = (await stubs[1].Get(spb.SessionsGetRequest(session_id=sid), timeout=20)).step.state
            check_counter(state, ledgers[sid])


async def test_a_replica_cut_off_while_history_was_compacted_reloads_the_whole_flow(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The replica reaches etcd through a proxy the test cuts; meanwhile two versions are
    published and etcd's history compacted past what the replica saw. Reconnected, its
    watch cannot resume there: it reloads everything and serves the latest version."""
    await deployment.publish("counter", write_counter_flow(tmp_path / "v1", 5, banner="one"))
    (host, port) = deployment.cluster.endpoints[0].split(":")
    proxy = TcpProxy(host, int(port))
    await proxy.start()
    try:
        # In a thread: the proxy runs on this event loop while the replica starts.
        (replica,) = await asyncio.to_thread(
            deployment.replicas_for,
            1,
            "counter",
            options={"entry": counter_node(0), "endpoints": [proxy.endpoint]},
        )
        async with channels([replica]) as (channel,):
            loader = graph_pb2_grpc.GraphLoaderStub(channel)

            async def content() -> str:
                request = graph_pb2.GetNodeRequest(node_id=counter_node(0))
                return str((await loader.GetNode(request, timeout=10)).node.content).strip()

            assert await content() == "one 0"
            await proxy.cut()
            await deployment.publish("counter", write_counter_flow(tmp_path / "v2", 5, banner="two"))
            async with EtcdClient(deployment.config()) as client:
                v3 = write_counter_flow(tmp_path / "v3", 6, banner="three")
                latest = await publish(client, "counter", v3)
                await client.call("Compact", rpc.CompactionRequest(revision=latest.revision, physical=True))
            assert await content() == "one 0"  # cut off: still the version it had
            await proxy.start()

            async def reloaded() -> bool:
                return await content() == "three 0"

            await eventually(reloaded, "the replica serves the latest version", within=60)
            nodes = await loader.ListNodes(graph_pb2.ListNodesRequest(), timeout=10)
            assert sorted(nodes.node_ids) == sorted(counter_node(i) for i in range(7))
            assert "graph changed: everything (full reload)" in replica.log()
    finally:
        await proxy.cut()
