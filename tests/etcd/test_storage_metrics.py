"""The server's etcd storage metrics (trellis.server.etcd_storage) on a real etcd: the
database size against the configured quota, and etcd's NOSPACE alarm once an etcd
with a small quota is full."""

from __future__ import annotations

from aetcd import rpc
from prometheus_client import CollectorRegistry

from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient
from trellis.errors import TrellisError
from trellis.server.etcd_storage import EtcdStorageMetrics

QUOTA = 16 * 1024 * 1024


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels or None)
    assert value is not None, f"{name} {labels} not exported"
    return value


async def test_the_database_size_is_exported_against_the_quota(etcd_server: EtcdCluster) -> None:
    registry = CollectorRegistry()
    async with EtcdClient(config_for(etcd_server)) as client:
        metrics = EtcdStorageMetrics(client, registry, quota_bytes=QUOTA)
        await metrics.refresh()
    size = _value(registry, "trellis_etcd_db_size_bytes")
    assert size > 0
    assert 0 < _value(registry, "trellis_etcd_db_size_in_use_bytes") <= size
    assert _value(registry, "trellis_etcd_db_quota_ratio") == size / QUOTA
    assert _value(registry, "trellis_etcd_alarm", alarm="NOSPACE") == 0


async def test_a_full_etcd_raises_the_nospace_alarm_metric() -> None:
    registry = CollectorRegistry()
    with EtcdCluster(1, ["--quota-backend-bytes", str(QUOTA)]) as cluster:
        async with EtcdClient(config_for(cluster, request_timeout=5.0)) as client:
            metrics = EtcdStorageMetrics(client, registry, quota_bytes=QUOTA)
            value = b"x" * (512 * 1024)
            refused = None
            for n in range(4 * QUOTA // len(value)):  # bounded: far more than the quota holds
                try:
                    await client.call("Put", rpc.PutRequest(key=f"/fill/{n}".encode(), value=value))
                except TrellisError as exc:
                    refused = exc
                    break
            assert refused is not None, "etcd never refused a write"
            await metrics.refresh()
    assert _value(registry, "trellis_etcd_alarm", alarm="NOSPACE") == 1
    assert _value(registry, "trellis_etcd_db_quota_ratio") >= 0.8
