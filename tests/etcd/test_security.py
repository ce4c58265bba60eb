"""TLS (mutual) and etcd authentication, against real etcd processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from aetcd import rpc

from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster, EtcdUnavailable
from tests.support.requirements import missing
from trellis.adapters.etcd import EtcdClient, EtcdGraphLoader, EtcdLocker, EtcdStateStore
from trellis.adapters.etcd.publish import publish
from trellis.domain import State
from trellis.errors import BackendUnavailable, ConfigError


@pytest.fixture
def tls_etcd() -> Iterator[EtcdCluster]:
    try:
        cluster = EtcdCluster(1, tls=True)
        cluster.__enter__()
    except EtcdUnavailable as exc:
        missing(f"etcd with TLS is not available: {exc}")
    try:
        yield cluster
    finally:
        cluster.close()


async def test_mutual_tls(tls_etcd: EtcdCluster) -> None:
    tls = tls_etcd.tls
    assert tls is not None
    config = config_for(
        tls_etcd, ca_file=str(tls.ca), cert_file=str(tls.client_cert), key_file=str(tls.client_key)
    )
    async with EtcdClient(config) as client:
        store = EtcdStateStore(client)
        handle = await EtcdLocker(client).acquire("s", ttl=5)
        revision = await store.save("s", State.new("s", "start"), fence=handle)
        assert (await store.load("s")).revision == revision
        await handle.unlock()
    # Without TLS the member does not answer at all.
    plain = EtcdClient(config_for(tls_etcd, dial_timeout=1.0))
    with pytest.raises(BackendUnavailable):
        await plain.connect()
    await plain.close()


@pytest.fixture
def tls_etcd3() -> Iterator[EtcdCluster]:
    try:
        cluster = EtcdCluster(3, tls=True)
        cluster.__enter__()
    except EtcdUnavailable as exc:
        missing(f"etcd with TLS is not available: {exc}")
    try:
        yield cluster
    finally:
        cluster.close()


async def test_tls_over_several_ip_endpoints(tls_etcd3: EtcdCluster) -> None:
    """Bare IP endpoints: each member's certificate is checked against the first
    endpoint's address (127.0.0.1 here, in every member's certificate), not against
    the list of addresses, and that holds while the first member is down."""
    tls = tls_etcd3.tls
    assert tls is not None
    assert all(endpoint.startswith("127.0.0.1:") for endpoint in tls_etcd3.endpoints)
    config = config_for(
        tls_etcd3, ca_file=str(tls.ca), cert_file=str(tls.client_cert), key_file=str(tls.client_key)
    )
    async with EtcdClient(config) as client:
        store = EtcdStateStore(client)
        revision = await store.save("s", State.new("s", "start"))
        assert (await store.load("s")).revision == revision
    await asyncio.to_thread(tls_etcd3.members[0].stop)
    async with EtcdClient(config) as client:
        assert (await EtcdStateStore(client).load("s")).revision == revision


async def test_user_and_password_with_expiring_tokens(private_etcd: EtcdCluster, tmp_path: Path) -> None:
    member = private_etcd.members[0]
    member.stop()
    member.extra_args = ("--auth-token-ttl=1",)
    private_etcd.restart(member)
    async with EtcdClient(config_for(private_etcd)) as admin:
        for request in (
            ("RoleAdd", rpc.AuthRoleAddRequest(name="root")),
            ("UserAdd", rpc.AuthUserAddRequest(name="root", password="s3cret")),
            ("UserGrantRole", rpc.AuthUserGrantRoleRequest(user="root", role="root")),
            ("AuthEnable", rpc.AuthEnableRequest()),
        ):
            await getattr(admin._stub("Auth"), request[0])(request[1], timeout=5)

    config = config_for(private_etcd, username="root", password="s3cret")
    async with EtcdClient(config) as client:
        store = EtcdStateStore(client)
        await store.save("s", State.new("s", "start"))
        handle, _ = await store.lock_and_load("s", ttl=5)  # opens the watch stream with this token
        await store.save_and_unlock(handle, "s", None)
        await asyncio.sleep(2.5)  # the simple token expires after 1 s idle: the client must log in again
        handle, state = await store.lock_and_load("s", ttl=5)
        assert state is not None
        # A watch created now, on the stream opened with the expired token, still works.
        loader = EtcdGraphLoader(client, "tour")
        stream = loader.watch()
        assert await loader.list_nodes() == []
        (tmp_path / "start.md").write_text("Hi\n")
        published = await publish(client, "tour", tmp_path)
        async with asyncio.timeout(15):
            change = await anext(stream)
        assert change.revision == published.revision
        await stream.aclose()
        await loader.aclose()
        await store.save_and_unlock(handle, "s", state)

    wrong = EtcdClient(config_for(private_etcd, username="root", password="nope"))
    with pytest.raises(ConfigError, match="password"):
        await wrong.connect()
    await wrong.close()
