"""A trellis deployment on etcd for the system tests: flows published, replicas started
as processes and stopped by PID, channels to them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support.etcd_process import EtcdCluster
from tests.support.replicas import Replica, serve_args, start_replicas
from trellis.adapters.etcd import EtcdClient, EtcdConfig
from trellis.adapters.etcd.publish import publish


class Deployment:
    """One trellis deployment (a fresh key prefix) on an etcd cluster: publishes flows
    and starts replicas; every replica it started is stopped at the end."""

    def __init__(self, cluster: EtcdCluster, log_dir: Path) -> None:
        self.cluster = cluster
        self.prefix = f"/sys-{uuid.uuid4().hex[:8]}"
        self.log_dir = log_dir
        self.replicas: list[Replica] = []

    def config(self, **changes: object) -> EtcdConfig:
        values: dict[str, object] = {
            "endpoints": tuple(self.cluster.endpoints),
            "prefix": self.prefix,
            "request_timeout": 3.0,
            "dial_timeout": 5.0,
        }
        values.update(changes)
        return EtcdConfig(**values)  # type: ignore[arg-type]

    async def publish(self, graph: str, directory: Path) -> None:
        async with EtcdClient(self.config()) as client:
            await publish(client, graph, directory)

    def replicas_for(
        self,
        count: int,
        graph: str,
        *,
        name: str = "r",
        env: dict[str, str] | None = None,
        options: dict[str, object] | None = None,
    ) -> list[Replica]:
        """``count`` replicas serving ``graph`` (started, serving); ``options`` go to serve_args
        (``endpoints`` replaces the cluster's, e.g. to go through a proxy)."""
        options = dict(options or {})
        endpoints = options.pop("endpoints", self.cluster.endpoints)
        made = [
            Replica(
                f"{name}{i}",
                serve_args(endpoints, self.prefix, graph, **options),  # type: ignore[arg-type]
                self.log_dir,
                env=dict(env or {}),
            )
            for i in range(len(self.replicas), len(self.replicas) + count)
        ]
        self.replicas.extend(made)
        start_replicas(made)
        return made

    def close(self) -> None:
        for replica in self.replicas:
            replica.kill()


@asynccontextmanager
async def channels(replicas: Sequence[Replica]) -> AsyncIterator[list[object]]:
    import grpc  # type: ignore[import-untyped]

    opened = [grpc.aio.insecure_channel(r.target) for r in replicas]
    try:
        yield opened
    finally:
        for channel in opened:
            await channel.close()
