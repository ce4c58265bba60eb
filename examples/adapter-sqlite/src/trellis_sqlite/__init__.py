"""trellis adapters as a plugin: ``store: sqlite:PATH`` and ``locker: flock:DIRECTORY``.

The factories below are what the entry points in pyproject.toml name: trellis
imports this module only when a configuration uses one of the two schemes.
"""

from __future__ import annotations

from trellis.errors import ConfigError
from trellis.plugins import BuildContext, Component, PortSpec
from trellis_sqlite.locker import FileLocker
from trellis_sqlite.store import SqliteStore

__all__ = ["FileLocker", "SqliteStore", "locker_factory", "store_factory"]


async def store_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    if not spec.target:
        raise ConfigError(f"store: {spec.url!r} needs a database file after 'sqlite:'")
    # The server passes its state limit (max_state_bytes) in the "limits" section.
    limit = ctx.section("limits").get("max_state_bytes")
    # Component.of picks up the store's probe() and close().
    return Component.of(SqliteStore(spec.target, max_state_bytes=int(limit) if limit else None))


async def locker_factory(spec: PortSpec, ctx: BuildContext) -> Component:
    if not spec.target:
        raise ConfigError(f"locker: {spec.url!r} needs a directory after 'flock:'")
    return Component.of(FileLocker(spec.target))
