"""The composition root: every port built from the configuration, in one place.

Nothing else in the server constructs an adapter. Adapters are found by URL
scheme through their entry points (trellis.plugins). Tests and embedders that
already hold port objects call ``assemble`` with them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trellis.engine import Engine
from trellis.errors import ConfigError, TrellisError
from trellis.locked_store import step_store_for
from trellis.plugins import BuildContext, Closer, Component, Probe, build, parse_url
from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.engine import EnginePort
from trellis.ports.loader import GraphLoader
from trellis.ports.locker import DistributedLocker
from trellis.ports.sessions import SessionsPort
from trellis.ports.store import StateStore, StepStore
from trellis.server import lifecycle_capture
from trellis.server.config import ServerConfig
from trellis.server.limits import Limits
from trellis.server.observe import MeteredDispatcher, Observer, metered_step_store
from trellis.server.tool_policies import approvals_of
from trellis.sessions import SessionManager
from trellis.timers import MemoryTimerQueue, TimerQueue, TimerService

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

LOG = logging.getLogger("trellis.server")


@dataclass(slots=True)
class Composition:
    """What the server serves: the ports it exposes, the engine and session manager over
    them, the health probes of their backends, and what to close at shutdown."""

    loader: GraphLoader
    store: StateStore
    dispatcher: ActionDispatcher | None
    engine: EnginePort
    sessions: SessionsPort
    probes: dict[str, Probe] = field(default_factory=dict)
    closers: list[Closer] = field(default_factory=list)
    # loops the server runs while it serves (cancelled at stop): timers, storage checks
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    timers: TimerService | None = None

    async def aclose(self) -> None:
        await _close_all(self.closers)


async def _close_all(closers: list[Closer]) -> None:
    for close in reversed(closers):
        try:
            await close()
        except Exception:
            LOG.exception("closing a port failed")
    closers.clear()


def reply_limits(config: ServerConfig) -> Limits:
    """The limits of what the server receives and sends, from its configuration."""
    return Limits(
        config.max_input_bytes,
        config.max_context_bytes,
        config.max_message_bytes,
        config.effective_max_state_bytes(),
    )


def assemble(
    loader: GraphLoader,
    store: StateStore,
    locker: DistributedLocker | None,
    dispatcher: ActionDispatcher | None,
    config: ServerConfig,
    observer: Observer,
    tracer: Tracer | None = None,
) -> Composition:
    """The engine and session manager over ready ports, metered once where they wait
    (the step store's lock) and where they call out (the dispatcher); with ``tracer``,
    their steps, store calls and dispatches traced too (nothing is wrapped without)."""
    engine = Engine(
        loader,
        entry_node=config.effective_entry_node(),
        default_error_node=config.effective_error_node(),
        html=config.html,
        # record: each reply carries the events of its call (lifecycle_capture)
        hooks=[observer.hook, lifecycle_capture.record],
        limits=config.evaluation_limits(),
    )
    if tracer is not None:
        from trellis.server import tracing

        if locker is not None:
            locker = tracing.TracedLocker(locker, tracer)
    step_dispatcher: ActionDispatcher | None = None
    step_store: StepStore = metered_step_store(step_store_for(store, locker), observer)
    if dispatcher is not None:
        step_dispatcher = MeteredDispatcher(dispatcher, observer)
    if tracer is not None:
        step_store = tracing.traced_step_store(step_store, tracer)
        if step_dispatcher is not None:
            step_dispatcher = tracing.TracedDispatcher(step_dispatcher, tracer)
    manager = SessionManager(
        engine,
        store,
        step_store=step_store,
        dispatcher=step_dispatcher,
        lock_ttl=config.lock_ttl,
        input_limit=config.max_input_bytes,
        # A step whose reply could not be sent is refused before it is saved.
        check_step=reply_limits(config).check_step,
        approvals=approvals_of(config.tool_policies),
    )
    sessions: SessionsPort = manager
    if tracer is not None:
        sessions = tracing.TracedSessions(manager, tracer)
    return Composition(loader=loader, store=store, dispatcher=dispatcher, engine=engine, sessions=sessions)


async def _dispatcher(config: ServerConfig, ctx: BuildContext) -> tuple[ActionDispatcher | None, list[Probe]]:
    built: dict[str, Component] = {}
    section = {"policies": config.tool_policies}
    # Sidecars serve what their ListTools answer lists (none before they have answered),
    # so that one not started yet does not claim every tool.
    sidecar_ctx = BuildContext(
        sections={**ctx.sections, "dispatcher": {**section, "listed_only": True}},
        shared=ctx.shared,
        closers=ctx.closers,
    )
    ctx = BuildContext(
        sections={**ctx.sections, "dispatcher": section}, shared=ctx.shared, closers=ctx.closers
    )

    async def get(url: str, in_ctx: BuildContext = ctx) -> Component:
        if url not in built:
            built[url] = await build("dispatcher", url, in_ctx)
        return built[url]

    default_url = config.effective_dispatcher()
    default = (await get(default_url)).value if default_url else None
    routes: Mapping[str, ActionDispatcher] = {
        tool: (await get(url)).value for tool, url in config.tool_routes.items()
    }
    sidecars = [(await get(url, sidecar_ctx)).value for url in config.sidecars]
    probes = [c.probe for c in built.values() if c.probe is not None]
    if not routes and not sidecars:
        return default, probes
    from trellis.adapters.tool_router import ToolRouter

    return ToolRouter(routes, default=default, discovered=sidecars), probes


def _at_rest(store: StateStore, config: ServerConfig) -> StateStore:
    """The store with the configured middleware: states masked (``store_masking``), then
    sealed with the keys of ``store_keys_file``. Masking is the outer layer so it sees the
    plain state; encryption then seals what is left."""
    if config.store_keys_file:
        try:
            from trellis.adapters.encrypting_store import KeyRing, encrypting
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"store_keys_file: encryption at rest needs the 'cryptography' package (missing module "
                f"{exc.name!r}): pip install 'trellis-flow[crypto]'"
            ) from None
        store = encrypting(store, KeyRing.from_file(config.store_keys_file))
    if config.store_masking:
        from trellis.adapters.masking_store import MaskingRules, masking

        store = masking(store, MaskingRules.from_config(config.store_masking, "store_masking"))
    return store


async def build_composition(
    config: ServerConfig, observer: Observer, tracer: Tracer | None = None
) -> Composition:
    """Every port from ``config``. Raises ConfigError naming the setting that is wrong;
    on failure, whatever was already built is closed again."""
    limits = {
        "max_state_bytes": config.effective_max_state_bytes(),
        "memory_max_sessions": config.memory_max_sessions,
        "memory_max_bytes": config.memory_max_bytes,
    }
    ctx = BuildContext(sections={"etcd": config.etcd, "limits": limits})
    try:
        loader = await build("loader", config.effective_loader(), ctx)
        store = await build("store", config.store, ctx)
        store_value = _at_rest(store.value, config)
        # A store that is its own lock service (StepStore) on the same backend as the
        # configured locker does lock+load and save+unlock in one round trip each: the
        # session manager only takes that path when it is given no separate locker.
        locker: Component | None = None
        if not (
            isinstance(store_value, StepStore)
            and parse_url("locker", config.locker).scheme == parse_url("store", config.store).scheme
        ):
            locker = await build("locker", config.locker, ctx)
        dispatcher, dispatcher_probes = await _dispatcher(config, ctx)
        composition = assemble(
            loader.value, store_value, locker.value if locker else None, dispatcher, config, observer, tracer
        )
    except BaseException:
        await _close_all(ctx.closers)
        raise
    for name, component in (("loader", loader), ("store", store), ("locker", locker)):
        if component is not None and component.probe is not None:
            composition.probes[name] = component.probe
    if dispatcher_probes:

        async def probe_dispatchers() -> None:
            for probe in dispatcher_probes:
                await probe()

        composition.probes["dispatcher"] = probe_dispatchers
    composition.closers = ctx.closers
    try:
        if config.timers:
            await _add_timers(composition, config, store.value)
        if parse_url("store", config.store).scheme == "etcd":
            from trellis.server.etcd_storage import EtcdStorageMetrics

            client = getattr(store.value, "client", None)
            if client is not None:
                metrics = EtcdStorageMetrics(client, observer.registry, config.etcd_quota_bytes)
                composition.background.append(metrics.run)
    except BaseException:
        await composition.aclose()
        raise
    return composition


async def _add_timers(composition: Composition, config: ServerConfig, raw_store: object) -> None:
    """Durable timers over the store's backend: in etcd when the store is etcd (shared by
    the replicas), else in this process, rebuilt from the stored sessions now."""
    sessions = composition.sessions
    if not isinstance(sessions, SessionManager):
        return
    queue: TimerQueue
    if parse_url("store", config.store).scheme == "etcd":
        from trellis.adapters.etcd.store import EtcdStateStore
        from trellis.adapters.etcd.timers import EtcdTimerQueue

        if not isinstance(raw_store, EtcdStateStore):
            raise ConfigError("timers: the etcd store was expected behind store: etcd:...")
        queue = EtcdTimerQueue(raw_store.client)
        raw_store.written_with_save = queue.written_with_save  # the timer goes with the step's save
    else:
        queue = MemoryTimerQueue()
    try:
        service = TimerService(
            sessions, queue, poll_interval=config.timer_poll_interval, claim_ttl=config.timer_claim_ttl
        )
    except ValueError as exc:
        raise ConfigError(f"timer_poll_interval / timer_claim_ttl: {exc}") from None
    store = composition.store
    composition.timers = service

    async def run_timers() -> None:
        if not queue.durable:
            try:
                armed = await service.rebuild(store)
            except TrellisError as exc:
                LOG.error("timers: cannot re-arm the waiting sessions from the store: %s", exc)
            else:
                LOG.info("timers: re-armed %d waiting session(s) from the store", armed)
        await service.run()

    composition.background.append(run_timers)
