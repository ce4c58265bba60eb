"""The composition root: every port built from the configuration, in one place.

Nothing else in the server constructs an adapter. Tests and embedders can
build Ports themselves (``Ports.of``) from any objects that satisfy the ports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.engine import EnginePort
from trellis.ports.loader import GraphLoader
from trellis.ports.locker import DistributedLocker
from trellis.ports.store import StateStore, StepStore
from trellis.server.config import ServerConfig
from trellis.server.observe import MeteredDispatcher, MeteredLocker, Observer
from trellis.server.registry import BuildContext, Closer, Component, Probe, build, parse_url

LOG = logging.getLogger("trellis.server")


@dataclass(slots=True)
class Ports:
    loader: GraphLoader
    store: StateStore
    locker: DistributedLocker | None  # None: the store locks itself (StepStore, e.g. etcd)
    dispatcher: ActionDispatcher | None
    engine: EnginePort
    sessions: Any  # trellis.sessions.SessionManager (or anything with its methods)
    probes: dict[str, Probe] = field(default_factory=dict)
    closers: list[Closer] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                LOG.exception("closing a port failed")
        self.closers.clear()


def make_engine(loader: GraphLoader, config: ServerConfig, observer: Observer) -> Any:
    from trellis.engine import Engine

    return Engine(
        loader,
        entry_node=config.effective_entry_node(),
        default_error_node=config.effective_error_node(),
        hooks=[observer.hook],
        limits=config.evaluation_limits(),
    )


def make_sessions(
    engine: Any,
    store: StateStore,
    locker: DistributedLocker | None,
    dispatcher: ActionDispatcher | None,
    config: ServerConfig,
    observer: Observer,
) -> Any:
    from trellis.sessions import SessionManager

    return SessionManager(
        engine,
        store,
        locker=MeteredLocker(locker, observer) if locker is not None else None,
        dispatcher=MeteredDispatcher(dispatcher, observer) if dispatcher is not None else None,
        lock_ttl=config.lock_ttl,
        input_limit=config.max_input_bytes,
    )


async def _dispatcher(config: ServerConfig, ctx: BuildContext) -> tuple[ActionDispatcher | None, list[Probe]]:
    built: dict[str, Component] = {}

    async def get(url: str) -> Component:
        if url not in built:
            built[url] = await build("dispatcher", url, ctx)
        return built[url]

    default_url = config.effective_dispatcher()
    default = (await get(default_url)).value if default_url else None
    routes: Mapping[str, ActionDispatcher] = {
        tool: (await get(url)).value for tool, url in config.tool_routes.items()
    }
    probes = [c.probe for c in built.values() if c.probe is not None]
    if not routes:
        return default, probes
    from trellis.adapters.tool_router import ToolRouter

    return ToolRouter(routes, default=default), probes


async def build_ports(config: ServerConfig, observer: Observer) -> Ports:
    """Every port from ``config``. Raises ConfigError naming the setting that is wrong;
    on failure, whatever was already built is closed again."""
    ctx = BuildContext(config)
    try:
        loader = await build("loader", config.effective_loader(), ctx)
        store = await build("store", config.store, ctx)
        # A store that is its own lock service (StepStore) on the same backend as the
        # configured locker does lock+load and save+unlock in one round trip each: the
        # session manager only takes that path when it is given no separate locker.
        locker: Component | None = None
        if not (
            isinstance(store.value, StepStore)
            and parse_url("locker", config.locker).scheme == parse_url("store", config.store).scheme
        ):
            locker = await build("locker", config.locker, ctx)
        dispatcher, dispatcher_probes = await _dispatcher(config, ctx)
        engine = make_engine(loader.value, config, observer)
        locker_value = locker.value if locker is not None else None
        sessions = make_sessions(engine, store.value, locker_value, dispatcher, config, observer)
    except BaseException:
        await Ports(None, None, None, None, None, None, closers=ctx.closers).aclose()  # type: ignore[arg-type]
        raise
    probes: dict[str, Probe] = {}
    for name, component in (("loader", loader), ("store", store), ("locker", locker)):
        if component is not None and component.probe is not None:
            probes[name] = component.probe
    if dispatcher_probes:

        async def probe_dispatchers() -> None:
            for probe in dispatcher_probes:
                await probe()

        probes["dispatcher"] = probe_dispatchers
    return Ports(
        loader=loader.value,
        store=store.value,
        locker=locker_value,
        dispatcher=dispatcher,
        engine=engine,
        sessions=sessions,
        probes=probes,
        closers=ctx.closers,
    )
