"""A replica pointed at a graph nobody published has nothing to serve: its Engine (and
everything that walks the graph) reports NOT_SERVING until the graph is pushed."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.waiting import eventually
from trellis.adapters.etcd import EtcdConfig
from trellis.adapters.etcd.client import EtcdClient
from trellis.adapters.etcd.publish import publish
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_engine_is_not_serving_until_the_graph_is_published(
    etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    config = ServerConfig(
        listen="127.0.0.1:0",
        loader="etcd:never",
        store="memory:",
        health_probe_interval=0.1,
        etcd={"endpoints": list(etcd_config.endpoints), "prefix": etcd_config.prefix},
    )
    server = TrellisServer(config)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                return int(reply.status)

            assert await status("trellis.v1.Engine") == NOT_SERVING
            assert await status("trellis.v1.Sessions") == NOT_SERVING
            assert await status("") == SERVING  # the server itself is up

            (tmp_path / "start.md").write_text("Hello\n")
            async with EtcdClient(etcd_config) as client:
                await publish(client, "never", tmp_path)

            async def engine_serving() -> bool:
                return await status("trellis.v1.Engine") == SERVING

            await eventually(engine_serving, "Engine SERVING once the graph is published")
    finally:
        await server.stop(grace=1.0)
