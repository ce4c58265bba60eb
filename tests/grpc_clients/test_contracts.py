"""The public contract suites, run against the remote adapters: each talks to a real
server on 127.0.0.1 whose port is backed by the in-process adapter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from tests.support.servers import serving
from tests.support.tool_scripts import ECHO, FAIL, write_tools
from trellis.adapters.grpc import RemoteChannel, RemoteDispatcher, RemoteGraphLoader, RemoteStateStore
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.adapters.process_dispatcher import ProcessDispatcher
from trellis.contracts.dispatcher import ActionDispatcherContract
from trellis.contracts.loader import GraphLoaderContract
from trellis.contracts.store import StateStoreContract
from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.loader import GraphLoader
from trellis.ports.store import StateStore


class _Servers:
    """Keeps the server behind each adapter a test made, to stop it with the adapter."""

    def __init__(self) -> None:
        self.stacks: dict[int, AsyncExitStack] = {}
        self.backends: dict[int, Any] = {}

    async def close(self, adapter: Any) -> None:
        await adapter.aclose()
        stack = self.stacks.pop(id(adapter), None)
        if stack is not None:
            await stack.aclose()


class TestRemoteStateStoreContract(StateStoreContract):
    servers = _Servers()
    max_state_bytes = 64 * 1024  # the server's store refuses bigger states; the client reports it

    async def make_store(self, tmp_path: Path) -> StateStore:
        stack = AsyncExitStack()
        backend = MemoryStore(max_state_bytes=self.max_state_bytes)
        served = await stack.enter_async_context(serving(store=backend))
        store = RemoteStateStore(RemoteChannel(served.internal_target))
        self.servers.stacks[id(store)] = stack
        return store

    async def close_store(self, store: StateStore) -> None:
        await self.servers.close(store)


class TestRemoteGraphLoaderContract(GraphLoaderContract):
    servers = _Servers()

    async def make_loader(self, tmp_path: Path, definitions: Sequence[Mapping[str, Any]]) -> GraphLoader:
        backend = MemoryLoader(definitions)
        stack = AsyncExitStack()
        stack.callback(backend.close)
        served = await stack.enter_async_context(serving(loader=backend))
        loader = RemoteGraphLoader(RemoteChannel(served.target))
        self.servers.stacks[id(loader)] = stack
        self.servers.backends[id(loader)] = backend
        return loader

    async def close_loader(self, loader: GraphLoader) -> None:
        await self.servers.close(loader)

    async def put_definition(self, loader: GraphLoader, definition: Mapping[str, Any]) -> None:
        self.servers.backends[id(loader)].put(definition)

    async def remove_definition(self, loader: GraphLoader, node_id: str) -> None:
        self.servers.backends[id(loader)].remove(node_id)


class TestRemoteDispatcherContract(ActionDispatcherContract):
    servers = _Servers()

    async def make_dispatcher(self, tmp_path: Path) -> ActionDispatcher:
        tools = ProcessDispatcher.from_file(write_tools(tmp_path, {"echo": ECHO, "fail": FAIL}))
        stack = AsyncExitStack()
        served = await stack.enter_async_context(serving(dispatcher=tools))
        # The sidecar runs both tools; this client is configured to serve exactly those.
        dispatcher = RemoteDispatcher(
            RemoteChannel(served.internal_target), tools=[self.ECHO_TOOL, self.FAILING_TOOL]
        )
        self.servers.stacks[id(dispatcher)] = stack
        return dispatcher

    async def close_dispatcher(self, dispatcher: ActionDispatcher) -> None:
        await self.servers.close(dispatcher)
