"""Scheme registry: which factory builds a port from its URL-like setting.

``dir:./flow`` → (kind "loader", scheme "dir", target "./flow"). Built-in schemes
are registered below; adapters living elsewhere plug in with ONE line in PLUGINS
("module:function", imported only when a configuration uses that scheme), e.g.

    ("store", "etcd"): "trellis.adapters.etcd.factories:store_factory",

A factory is ``async def factory(spec: PortSpec, ctx: BuildContext) -> Component``.
It may give the component a ``probe`` (cheap reachability check for health:
return normally when the backend answers, raise otherwise) and a ``close``.
A port object with its own ``async def probe()`` / ``close()``/``aclose()``
gets them picked up automatically by ``Component.of``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trellis.errors import BackendUnavailable, ConfigError
from trellis.server.config import ServerConfig

Kind = Literal["loader", "store", "locker", "dispatcher"]
Probe = Callable[[], Awaitable[None]]
Closer = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PortSpec:
    kind: Kind
    scheme: str
    target: str
    url: str


@dataclass(slots=True)
class Component:
    value: Any
    probe: Probe | None = None
    close: Closer | None = None

    @classmethod
    def of(cls, value: Any) -> Component:
        probe = getattr(value, "probe", None)
        close = getattr(value, "aclose", None) or getattr(value, "close", None)
        closer: Closer | None = None
        if callable(close):

            async def closer() -> None:
                result = close()
                if inspect.isawaitable(result):
                    await result

        return cls(value, probe if callable(probe) else None, closer)


@dataclass(slots=True)
class BuildContext:
    """What factories may use: the whole configuration, and a place to share
    clients between ports (one etcd client for loader, store and locker)."""

    config: ServerConfig
    shared: dict[str, Any] = field(default_factory=dict)
    closers: list[Closer] = field(default_factory=list)


Factory = Callable[[PortSpec, BuildContext], Awaitable[Component]]

PLUGINS: dict[tuple[Kind, str], str] = {
    # (kind, scheme): "module:function" — remote (grpc://) and etcd adapters add their line here.
    ("loader", "grpc"): "trellis.adapters.grpc.factories:loader_factory",
    ("store", "grpc"): "trellis.adapters.grpc.factories:store_factory",
    ("dispatcher", "grpc"): "trellis.adapters.grpc.factories:dispatcher_factory",
    ("loader", "etcd"): "trellis.adapters.etcd.factories:loader_factory",
    ("store", "etcd"): "trellis.adapters.etcd.factories:store_factory",
    ("locker", "etcd"): "trellis.adapters.etcd.factories:locker_factory",
}

_FACTORIES: dict[tuple[Kind, str], Factory] = {}


def register(kind: Kind, scheme: str, factory: Factory) -> None:
    _FACTORIES[(kind, scheme)] = factory


def parse_url(kind: Kind, url: str) -> PortSpec:
    """``scheme:target`` or ``scheme://target``; a bare scheme name (``memory``) is
    accepted too, because ``store: memory:`` is not valid YAML without quotes."""
    scheme, sep, rest = url.partition(":")
    if not sep and scheme.lower() in schemes(kind):
        return PortSpec(kind, scheme.lower(), "", url)
    if not sep or not scheme:
        raise ConfigError(f"{kind}: {url!r} is not SCHEME:TARGET (e.g. {_example(kind)})")
    target = rest[2:] if rest.startswith("//") else rest
    return PortSpec(kind, scheme.lower(), target, url)


def _example(kind: Kind) -> str:
    examples = {
        "loader": "dir:./flow", "store": "memory:", "locker": "local:", "dispatcher": "process:tools.yaml"
    }
    return examples[kind]


def schemes(kind: Kind) -> list[str]:
    return sorted({s for k, s in (*_FACTORIES, *PLUGINS) if k == kind})


def _factory(spec: PortSpec) -> Factory:
    key = (spec.kind, spec.scheme)
    factory = _FACTORIES.get(key)
    if factory is not None:
        return factory
    plugin = PLUGINS.get(key)
    if plugin is None:
        raise ConfigError(
            f"{spec.kind}: unknown scheme '{spec.scheme}:' in {spec.url!r} "
            f"(known: {', '.join(s + ':' for s in schemes(spec.kind))})"
        )
    module_name, _, attr = plugin.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{spec.kind}: scheme '{spec.scheme}:' needs {module_name}, which is missing: {exc}"
        ) from exc
    loaded: Factory = getattr(module, attr)
    _FACTORIES[key] = loaded
    return loaded


async def build(kind: Kind, url: str, ctx: BuildContext) -> Component:
    spec = parse_url(kind, url)
    component = await _factory(spec)(spec, ctx)
    if component.close is not None:
        ctx.closers.append(component.close)
    return component


# --- built-in schemes ----------------------------------------------------------------


def _path(spec: PortSpec) -> Path:
    if not spec.target:
        raise ConfigError(f"{spec.kind}: {spec.url!r} needs a path after '{spec.scheme}:'")
    return Path(spec.target)


async def _dir_loader(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.directory_loader import DirectoryLoader

    path = _path(spec)
    if not path.is_dir():
        raise ConfigError(f"loader: flow directory '{path}' does not exist or is not a directory")
    component = Component.of(DirectoryLoader(path))
    if component.probe is None:

        async def probe() -> None:  # cheap: the directory is still there
            if not path.is_dir():
                raise BackendUnavailable(f"flow directory '{path}' is gone")

        component.probe = probe
    return component


async def _memory_loader(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.memory_loader import MemoryLoader

    return Component.of(MemoryLoader())


async def _memory_store(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.memory_store import MemoryStore

    return Component.of(MemoryStore())


async def _file_store(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.file_store import FileStore

    return Component.of(FileStore(_path(spec)))


async def _local_locker(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.local_locker import LocalLocker

    return Component.of(LocalLocker())


async def _process_dispatcher(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.process_dispatcher import ProcessDispatcher

    return Component.of(ProcessDispatcher.from_file(_path(spec)))


register("loader", "dir", _dir_loader)
register("loader", "memory", _memory_loader)
register("store", "memory", _memory_store)
register("store", "file", _file_store)
register("locker", "local", _local_locker)
register("dispatcher", "process", _process_dispatcher)
