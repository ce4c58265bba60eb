"""Real trellis servers on 127.0.0.1 (port 0, read back) over in-process ports, for client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.loader import GraphLoader
from trellis.ports.store import StateStore
from trellis.server.app import TrellisServer
from trellis.server.compose import Composition, assemble
from trellis.server.config import DEFAULT_LISTEN, ServerConfig
from trellis.server.observe import Observer

# The smallest graph a server needs to start (the contract suites do not walk it).
MINIMAL = [{"id": "start", "content": "hello"}]


@dataclass(slots=True)
class Served:
    server: TrellisServer
    ports: Composition

    @property
    def target(self) -> str:
        """The public port: Engine, Sessions, GraphLoader."""
        return f"127.0.0.1:{self.server.port}"

    @property
    def internal_target(self) -> str:
        """The internal listener: StateStore, ActionDispatcher."""
        return f"127.0.0.1:{self.server.internal_port}"


def ports_of(
    config: ServerConfig,
    observer: Observer,
    *,
    loader: GraphLoader | None = None,
    store: StateStore | None = None,
    dispatcher: ActionDispatcher | None = None,
) -> Composition:
    loader = loader if loader is not None else MemoryLoader(MINIMAL)
    store = store if store is not None else MemoryStore()
    locker = LocalLocker()
    return assemble(loader, store, locker, dispatcher, config, observer)


@asynccontextmanager
async def serving(
    *,
    loader: GraphLoader | None = None,
    store: StateStore | None = None,
    dispatcher: ActionDispatcher | None = None,
    config: ServerConfig | None = None,
) -> AsyncIterator[Served]:
    """A started server exposing the given in-process ports, with its internal listener
    on (``Served.internal_target``); stopped on exit."""
    config = config or ServerConfig()
    if config.listen == DEFAULT_LISTEN:
        config.listen = "127.0.0.1:0"
    if not config.internal_listen:
        config.internal_listen = "127.0.0.1:0"
    observer = Observer()
    ports = ports_of(config, observer, loader=loader, store=store, dispatcher=dispatcher)
    server = TrellisServer(config, composition=ports, observer=observer)
    await server.start()
    try:
        yield Served(server, ports)
    finally:
        await server.stop(grace=1.0)


ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@asynccontextmanager
async def flow_server(flow_dir: Path, **settings: object) -> AsyncIterator[TrellisServer]:
    config = ServerConfig(flow_dir=str(flow_dir), listen="127.0.0.1:0")
    for key, value in settings.items():
        setattr(config, key, value)
    server = TrellisServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=2.0)
