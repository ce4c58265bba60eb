"""Adapters as plugins: which factory builds a port from its URL-like setting.

``dir:./flow`` → (kind "loader", scheme "dir", target "./flow"). Every adapter,
built-in or third-party, is found the same way: an entry point in the group
``trellis.adapters`` named ``KIND.SCHEME`` (kinds: loader, store, locker,
dispatcher) pointing at its factory, e.g. in a plugin's ``pyproject.toml``::

    [project.entry-points."trellis.adapters"]
    "store.sqlite" = "trellis_sqlite:store_factory"

so ``store: sqlite:/var/lib/sessions.db`` selects it once the package is
installed. A factory is ``async def factory(spec: PortSpec, ctx: BuildContext)
-> Component``; the module is imported only when a configuration uses its
scheme, so an optional dependency (grpc, aetcd) is needed only by those who use it.

A component may carry a ``probe`` (a cheap reachability check for health: return
normally when the backend answers, raise otherwise) and a ``close``. A port
object with its own ``async def probe()`` / ``close()``/``aclose()`` gets them
picked up by ``Component.of``.

This module sits below the adapters and the server: adapters import it to
declare their factories, the server's composition root imports it to build.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, cast, get_args

from trellis.errors import ConfigError

Kind = Literal["loader", "store", "locker", "dispatcher"]
KINDS: tuple[Kind, ...] = get_args(Kind)
GROUP = "trellis.adapters"
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
    """What factories may use: the configuration sections of their backends (e.g. the
    ``etcd:`` mapping of the server configuration), and a place to share clients
    between ports (one etcd client for loader, store and locker)."""

    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    closers: list[Closer] = field(default_factory=list)

    def section(self, name: str) -> Mapping[str, Any]:
        """The configuration mapping ``name`` (empty when not configured)."""
        return self.sections.get(name) or {}


Factory = Callable[[PortSpec, BuildContext], Awaitable[Component]]


@cache
def _entry_points() -> dict[tuple[str, str], EntryPoint]:
    found: dict[tuple[str, str], EntryPoint] = {}
    for point in entry_points(group=GROUP):
        kind, _, scheme = point.name.partition(".")
        if kind in KINDS and scheme:
            found.setdefault((kind, scheme.lower()), point)
    return found


def schemes(kind: Kind) -> list[str]:
    """The schemes installed for ``kind``, sorted."""
    return sorted(s for k, s in _entry_points() if k == kind)


def parse_url(kind: Kind, url: str) -> PortSpec:
    """``scheme:target`` or ``scheme://target``; a bare scheme name (``memory``) is
    accepted too, because ``store: memory:`` is not valid YAML without quotes."""
    scheme, sep, rest = url.partition(":")
    if not sep and scheme.lower() in schemes(kind):
        return PortSpec(kind, scheme.lower(), "", url)
    if not sep or not scheme:
        raise ConfigError(f"{kind}: {url!r} is not SCHEME:TARGET (e.g. {_EXAMPLES[kind]})")
    target = rest[2:] if rest.startswith("//") else rest
    return PortSpec(kind, scheme.lower(), target, url)


_EXAMPLES: Mapping[Kind, str] = {
    "loader": "dir:./flow", "store": "memory:", "locker": "local:", "dispatcher": "process:tools.yaml"
}


def factory_for(spec: PortSpec) -> Factory:
    point = _entry_points().get((spec.kind, spec.scheme))
    if point is None:
        raise ConfigError(
            f"{spec.kind}: unknown scheme '{spec.scheme}:' in {spec.url!r} "
            f"(known: {', '.join(s + ':' for s in schemes(spec.kind))}; "
            f"a plugin adds one with an entry point '{spec.kind}.{spec.scheme}' in the group {GROUP!r})"
        )
    try:
        return cast(Factory, point.load())
    except ImportError as exc:
        raise ConfigError(
            f"{spec.kind}: scheme '{spec.scheme}:' needs {point.value}, which cannot be imported "
            f"({exc}); is its extra installed? (pip install 'trellis-flow[{_EXTRA.get(spec.scheme, 'all')}]')"
        ) from exc


_EXTRA = {"grpc": "client", "unix": "client", "etcd": "etcd"}


async def build(kind: Kind, url: str, ctx: BuildContext) -> Component:
    spec = parse_url(kind, url)
    component = await factory_for(spec)(spec, ctx)
    if component.close is not None:
        ctx.closers.append(component.close)
    return component
