"""The composition root's view: etcd ports built from URLs share one client."""

from __future__ import annotations

from pathlib import Path

import pytest

from trellis.adapters.etcd import EtcdConfig, EtcdGraphLoader, EtcdLocker, EtcdStateStore
from trellis.adapters.etcd.factories import ClientPool, loader_factory, locker_factory, store_factory
from trellis.adapters.etcd.publish import publish
from trellis.domain import State
from trellis.errors import ConfigError
from trellis.plugins import BuildContext, parse_url
from trellis.ports import DistributedLocker, GraphLoader, StateStore, StepStore, Watchable


async def test_ports_from_urls_share_one_client_and_work(etcd_config: EtcdConfig, tmp_path: Path) -> None:
    section = {
        "endpoints": list(etcd_config.endpoints),
        "prefix": etcd_config.prefix,
        "request_timeout": "3s",
    }
    ctx = BuildContext(sections={"etcd": section})
    try:
        store = await store_factory(parse_url("store", "etcd:"), ctx)
        locker = await locker_factory(parse_url("locker", "etcd:"), ctx)
        (tmp_path / "start.md").write_text("Hello\n")
        assert isinstance(store.value, EtcdStateStore)
        await publish(store.value.client, "tour", tmp_path)
        loader = await loader_factory(parse_url("loader", "etcd:tour"), ctx)
        assert isinstance(locker.value, EtcdLocker) and isinstance(loader.value, EtcdGraphLoader)
        assert store.value.client is locker.value.client is loader.value.client
        # The composition root picks the two-round-trip path by these protocols.
        assert isinstance(store.value, StateStore) and isinstance(store.value, StepStore)
        assert isinstance(locker.value, DistributedLocker)
        assert isinstance(loader.value, GraphLoader) and isinstance(loader.value, Watchable)
        assert store.probe is not None
        await store.probe()

        handle = await locker.value.acquire("s", ttl=10)
        await store.value.save("s", State.new("s", "start"), fence=handle)
        await handle.unlock()
        assert (await loader.value.get_node("start")).content == "Hello\n"
    finally:
        for close in reversed(ctx.closers):
            await close()


async def test_a_url_with_its_own_endpoints_and_a_graph_query(
    etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    from trellis.adapters.etcd.factories import loader_from_url

    url = f"etcd://{','.join(etcd_config.endpoints)}{etcd_config.prefix}?graph=tour&request_timeout=2s"
    pool = ClientPool()
    try:
        loader = await loader_from_url(url, pool=pool)
        assert loader.name == "tour"
        assert loader.client.config.prefix == etcd_config.prefix
        assert loader.client.config.request_timeout == 2.0
        with pytest.raises(ConfigError, match="must name one graph"):
            await loader_from_url(f"etcd://{etcd_config.endpoints[0]}/p", pool=pool)
    finally:
        await pool.close()


def test_a_bad_etcd_section_is_named() -> None:
    with pytest.raises(ConfigError, match="'colour'"):
        EtcdConfig.from_mapping({"colour": "blue"})
    with pytest.raises(ConfigError, match="request_timeout"):
        EtcdConfig.from_mapping({"request_timeout": "soon"})
    config = EtcdConfig.from_mapping({"endpoints": "a:1, b:2", "lease_ttl": 15, "dial_timeout": "2s"})
    assert config.endpoints == ("a:1", "b:2") and config.lease_ttl == 15.0 and config.dial_timeout == 2.0


async def test_a_composed_server_on_etcd_records_its_lock_waits(
    etcd_config: EtcdConfig, tmp_path: Path
) -> None:
    # A step that runs a served tool takes the session's lock (the store locks itself, in
    # one round trip with the load): that wait is metered. Uncontended steps that run no
    # tool take no lock (one transaction) and wait for none.
    import sys

    from trellis.server.compose import build_composition
    from trellis.server.config import ServerConfig
    from trellis.server.observe import Observer

    (tmp_path / "start.md").write_text("---\nwait: true\nto: greet\n---\nName?\n")
    (tmp_path / "greet.md").write_text("---\ndo: {name: hello}\nto: done\n---\n")
    (tmp_path / "done.md").write_text("---\nwait: true\n---\nDone\n")
    (tmp_path / "tools.yaml").write_text(
        f"tools:\n  - name: hello\n    command: {sys.executable!r}\n    args: ['-c', 'print(1)']\n"
    )
    config = ServerConfig(
        flow_dir=str(tmp_path),
        store="etcd:",
        locker="etcd:",
        etcd={"endpoints": list(etcd_config.endpoints), "prefix": etcd_config.prefix},
    )
    observer = Observer()
    composition = await build_composition(config, observer)
    try:
        await composition.sessions.start("metered")
        assert observer.registry.get_sample_value("trellis_lock_wait_seconds_count") == 0
        step = await composition.sessions.navigate("metered", "Ada")
        assert step.state.current_node_id == "done"
    finally:
        await composition.aclose()
    assert observer.registry.get_sample_value("trellis_lock_wait_seconds_count") == 1
