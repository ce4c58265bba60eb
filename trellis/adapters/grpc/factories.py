"""``grpc://HOST:PORT[?options]`` factories: the ``trellis.adapters`` entry points of the grpc schemes.

Options (see ``trellis.api.transport.parse_target``): ``tls``, ``ca``, ``cert``, ``key``,
``token_file``, ``timeout``, ``retries``; the dispatcher also takes
``tools=a,b`` (the tools it serves; ``all`` or no ``tools=``: every tool).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from trellis.adapters.grpc.channel import RemoteChannel
from trellis.adapters.grpc.dispatcher import RemoteDispatcher
from trellis.adapters.grpc.loader import RemoteGraphLoader
from trellis.adapters.grpc.store import RemoteStateStore
from trellis.errors import ConfigError
from trellis.plugins import BuildContext, Component, PortSpec


async def loader_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    return Component.of(RemoteGraphLoader(RemoteChannel.from_target(spec.target)))


async def store_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    return Component.of(RemoteStateStore(RemoteChannel.from_target(spec.target)))


async def dispatcher_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    query = spec.target.partition("?")[2]
    tools: list[str] | None = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "tools":
            names = [name.strip() for name in value.split(",") if name.strip()]
            if not names:
                raise ConfigError(f"dispatcher: {spec.url!r}: tools= needs tool names or 'all'")
            tools = None if names == ["all"] else names
    return Component.of(RemoteDispatcher(RemoteChannel.from_target(spec.target), tools))
