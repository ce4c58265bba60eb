"""Building etcd ports from the composition root's URL-like settings.

    store:  etcd:                       the shared ``etcd:`` section's connection
            etcd://h:p,h:p/prefix?...   a connection of its own (see config.py)
    locker: etcd:  |  etcd://...
    loader: etcd:NAME                   graph NAME over the shared connection
            etcd://h:p/prefix?graph=NAME

Ports with equal connection settings share ONE EtcdClient, hence one process
lease and one watch stream. ``store_factory``/``loader_factory``/``locker_factory``
are the ``trellis.adapters`` entry points of the etcd schemes (trellis.plugins).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trellis.adapters.etcd.client import EtcdClient, HealthCallback
from trellis.adapters.etcd.config import EtcdConfig, parse_etcd_url
from trellis.adapters.etcd.loader import EtcdGraphLoader
from trellis.adapters.etcd.locker import EtcdLocker
from trellis.adapters.etcd.store import EtcdStateStore
from trellis.errors import ConfigError
from trellis.plugins import BuildContext, Component, PortSpec


@dataclass
class ClientPool:
    """One EtcdClient per distinct connection configuration."""

    on_health: HealthCallback | None = None
    clients: dict[EtcdConfig, EtcdClient] = field(default_factory=dict)

    async def client(self, config: EtcdConfig) -> EtcdClient:
        client = self.clients.get(config)
        if client is None:
            client = self.clients[config] = EtcdClient(config, on_health=self.on_health)
        await client.connect()
        return client

    async def close(self) -> None:
        clients, self.clients = self.clients, {}
        for client in clients.values():
            await client.close()


def _split(
    url: str, base: EtcdConfig | None, extra: tuple[str, ...] = ()
) -> tuple[EtcdConfig, dict[str, str]]:
    if not url.startswith("etcd:"):
        raise ConfigError(f"{url!r} is not an etcd: URL")
    return parse_etcd_url(url, base, extra=extra)


async def store_from_url(
    url: str, base: EtcdConfig | None = None, pool: ClientPool | None = None
) -> EtcdStateStore:
    config, _ = _split(url, base)
    return EtcdStateStore(await (pool or ClientPool()).client(config))


async def locker_from_config(
    url: str, base: EtcdConfig | None = None, pool: ClientPool | None = None
) -> EtcdLocker:
    config, _ = _split(url, base)
    return EtcdLocker(await (pool or ClientPool()).client(config))


async def loader_from_url(
    url: str, base: EtcdConfig | None = None, pool: ClientPool | None = None
) -> EtcdGraphLoader:
    rest = url[len("etcd:") :] if url.startswith("etcd:") else ""
    if rest and not rest.startswith("/") and "?" not in rest:
        config, graph = base or EtcdConfig(), rest  # etcd:NAME
    else:
        config, extra = _split(url, base, extra=("graph",))
        graph = extra.get("graph", "")
    if not graph or "/" in graph:
        raise ConfigError(
            f"loader: {url!r} must name one graph: etcd:NAME or etcd://ENDPOINTS/PREFIX?graph=NAME"
        )
    return EtcdGraphLoader(await (pool or ClientPool()).client(config), graph)


# --- trellis.plugins factories --------------------------------------------------


def _shared(ctx: BuildContext) -> tuple[ClientPool, EtcdConfig]:
    pool = ctx.shared.get("etcd.pool")
    if pool is None:
        pool = ctx.shared["etcd.pool"] = ClientPool()
        ctx.closers.append(pool.close)
    return pool, EtcdConfig.from_mapping(ctx.section("etcd"))


async def store_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    pool, base = _shared(ctx)
    store = await store_from_url(spec.url, base, pool)
    # The server's state limit, on top of etcd's own request limit (whichever is smaller wins).
    limit = ctx.section("limits").get("max_state_bytes")
    store.max_state_bytes = int(limit) if limit else None
    return Component(store, probe=store.client.probe)


async def locker_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    pool, base = _shared(ctx)
    locker = await locker_from_config(spec.url, base, pool)
    return Component(locker, probe=locker.client.probe)


async def loader_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    pool, base = _shared(ctx)
    loader = await loader_from_url(spec.url, base, pool)
    return Component(loader, probe=loader.probe, close=loader.aclose)
