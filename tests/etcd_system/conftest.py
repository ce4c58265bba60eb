"""Fixtures: deployments of real trellis server replicas (processes on loopback, stopped
by PID) on real etcd (tests/support/etcd_fixtures.py, never a mock)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd_system.deployment import Deployment
from tests.support.etcd_process import EtcdCluster


def _deployment(cluster: EtcdCluster, tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(cluster, tmp_path / "logs")
    try:
        yield deployment
    finally:
        deployment.close()


@pytest.fixture
def deployment(etcd_server: EtcdCluster, tmp_path: Path) -> Iterator[Deployment]:
    """A deployment on the shared single-member etcd."""
    yield from _deployment(etcd_server, tmp_path)


@pytest.fixture
def private_deployment(private_etcd: EtcdCluster, tmp_path: Path) -> Iterator[Deployment]:
    """A deployment on an etcd of its own (the test may stop it)."""
    yield from _deployment(private_etcd, tmp_path)


@pytest.fixture
def cluster_deployment(etcd_cluster3: EtcdCluster, tmp_path: Path) -> Iterator[Deployment]:
    """A deployment on a 3-member etcd cluster (the test may kill a member)."""
    yield from _deployment(etcd_cluster3, tmp_path)
