"""``grpc://HOST:PORT[?options]`` factories: the ``trellis.adapters`` entry points of the grpc schemes.

Options (see ``trellis.api.transport.parse_target``): ``tls``, ``ca``, ``cert``, ``key``,
``token_file``, ``timeout``, ``retries``; the dispatcher also takes
``tools=a,b`` (the tools it serves, overriding its ListTools answer; ``all``: every
tool). ``unix:///PATH`` is the same over a Unix domain socket. The dispatcher reads
the ``dispatcher`` section of the build context: ``policies`` (per-tool timeout and
retry set by the server) and ``listed_only`` (serve only what ListTools listed).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.adapters.grpc.dispatcher import RemoteDispatcher
from trellis.adapters.grpc.loader import RemoteGraphLoader
from trellis.adapters.grpc.store import RemoteStateStore
from trellis.errors import ConfigError
from trellis.plugins import BuildContext, Component, PortSpec


def _target(spec: PortSpec) -> str:
    """The channel target of ``grpc://HOST:PORT`` or ``unix:///PATH`` (a Unix socket)."""
    return f"unix:{spec.target}" if spec.scheme == "unix" else spec.target


async def loader_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    return Component.of(RemoteGraphLoader(RemoteChannel.from_target(_target(spec))))


async def store_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    return Component.of(RemoteStateStore(RemoteChannel.from_target(_target(spec))))


async def dispatcher_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    query = spec.target.partition("?")[2]
    tools: list[str] | None = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "tools":
            names = [name.strip() for name in value.split(",") if name.strip()]
            if not names:
                raise ConfigError(f"dispatcher: {spec.url!r}: tools= needs tool names or 'all'")
            tools = None if names == ["all"] else names
    dispatcher = RemoteDispatcher(
        RemoteChannel.from_target(_target(spec)),
        tools,
        policies=ctx.section("dispatcher").get("policies", {}),
        claims_unknown=not ctx.section("dispatcher").get("listed_only", False),
    )
    return Component(dispatcher, probe=dispatcher.probe, close=dispatcher.aclose)
