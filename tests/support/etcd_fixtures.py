"""Fixtures: real etcd processes on loopback (never a mock), loaded for every test
folder by tests/conftest.py (pytest_plugins).

``etcd_server`` is one member shared by the whole session; tests stay apart by
using a fresh key prefix each (``etcd_config``). Tests that stop or kill etcd
start their own (``private_etcd``, ``etcd_cluster3``). Without the etcd binary
the tests are skipped, except under CI=true where that is a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.support.etcd_process import EtcdCluster, running_cluster
from trellis.adapters.etcd import EtcdClient, EtcdConfig


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdCluster]:
    yield from running_cluster(1)


@pytest.fixture
def private_etcd() -> Iterator[EtcdCluster]:
    """A single member of this test's own, for tests that stop or restart it."""
    yield from running_cluster(1)


@pytest.fixture
def etcd_cluster3() -> Iterator[EtcdCluster]:
    yield from running_cluster(3)


def config_for(cluster: EtcdCluster, **changes: object) -> EtcdConfig:
    values: dict[str, object] = {
        "endpoints": tuple(cluster.endpoints),
        "prefix": f"/test-{uuid.uuid4().hex[:10]}",
        "request_timeout": 3.0,
        "dial_timeout": 5.0,
    }
    values.update(changes)
    return EtcdConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def etcd_config(etcd_server: EtcdCluster) -> EtcdConfig:
    return config_for(etcd_server)


@pytest_asyncio.fixture
async def etcd_client(etcd_config: EtcdConfig) -> AsyncIterator[EtcdClient]:
    client = EtcdClient(etcd_config)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()
