"""Factories of the in-process adapters, registered as ``trellis.adapters`` entry
points in pyproject.toml like any plugin's (see trellis.plugins)."""

from __future__ import annotations

from pathlib import Path

from trellis.errors import BackendUnavailable, ConfigError
from trellis.plugins import BuildContext, Component, PortSpec


def _path(spec: PortSpec) -> Path:
    if not spec.target:
        raise ConfigError(f"{spec.kind}: {spec.url!r} needs a path after '{spec.scheme}:'")
    return Path(spec.target)


async def dir_loader(spec: PortSpec, ctx: BuildContext) -> Component:
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


async def memory_loader(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.memory_loader import MemoryLoader

    return Component.of(MemoryLoader())


def _limit(ctx: BuildContext, name: str) -> int | None:
    """A store limit from the ``limits`` section (the server's configuration; None = none)."""
    value = ctx.section("limits").get(name)
    return int(value) if value else None


async def memory_store(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.memory_store import MemoryStore

    return Component.of(
        MemoryStore(
            max_state_bytes=_limit(ctx, "max_state_bytes"),
            max_sessions=_limit(ctx, "memory_max_sessions"),
            max_bytes=_limit(ctx, "memory_max_bytes"),
        )
    )


async def file_store(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.file_store import FileStore

    return Component.of(FileStore(_path(spec), max_state_bytes=_limit(ctx, "max_state_bytes")))


async def local_locker(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.local_locker import LocalLocker

    return Component.of(LocalLocker())


async def process_dispatcher(spec: PortSpec, ctx: BuildContext) -> Component:
    from trellis.adapters.process_dispatcher import ProcessDispatcher

    return Component.of(ProcessDispatcher.from_file(_path(spec)))
