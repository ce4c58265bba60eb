"""Shared helpers for the engine tests: graphs are written in file form (the same
sugar as Markdown/YAML files) and loaded through the real MemoryLoader.

Every engine test runs twice (see conftest.py): in process, and through a real
server's gRPC Engine service. ``make_engine`` hides which: in the grpc transport it
returns an EnginePort answered, through the RemoteEngine adapter, by a real server on
127.0.0.1 that serves the same nodes with the same options.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from tests.support.servers import serving
from trellis.adapters.grpc import RemoteChannel, RemoteEngine
from trellis.adapters.memory_loader import MemoryLoader
from trellis.domain import HookKind, JSONValue, LifecycleEvent, Node, RenderResult, State, ToolResult
from trellis.engine import Engine
from trellis.ports.engine import LifecycleHook
from trellis.server.config import ServerConfig

# The Engine options a server is configured with (ServerConfig fields of the same name);
# ``hooks`` go to the RemoteEngine, which replays the events each reply carries into them;
# tests using any other option are marked in_process_only.
SERVED_OPTIONS = frozenset({"entry_node", "default_error_node"})


class ServedEngines:
    """The servers the grpc transport started for one test; all stopped at its teardown."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self.started = 0

    def engine(self, nodes: tuple[Mapping[str, Any] | Node, ...], options: Mapping[str, Any]) -> ServedEngine:
        options = dict(options)
        hooks = tuple(options.pop("hooks", ()))
        unserved = set(options) - SERVED_OPTIONS
        if unserved:
            raise TypeError(
                f"the grpc transport cannot give a server the engine options {sorted(unserved)}: "
                "mark the test in_process_only"
            )
        return ServedEngine(self, MemoryLoader(nodes), ServerConfig(**options), hooks)

    async def serve(
        self, loader: MemoryLoader, config: ServerConfig, hooks: tuple[LifecycleHook, ...]
    ) -> RemoteEngine:
        served = await self._stack.enter_async_context(serving(loader=loader, config=config))
        self.started += 1
        engine = RemoteEngine(RemoteChannel(served.target), hooks=hooks)
        self._stack.push_async_callback(engine.aclose)
        return engine

    async def aclose(self) -> None:
        await self._stack.aclose()


class ServedEngine:
    """An EnginePort whose server starts on first use, inside the test's event loop
    (``make_engine`` is called outside of one, or before the test awaits anything)."""

    def __init__(
        self,
        servers: ServedEngines,
        loader: MemoryLoader,
        config: ServerConfig,
        hooks: tuple[LifecycleHook, ...],
    ) -> None:
        self._servers = servers
        self._loader = loader
        self._config = config
        self._hooks = hooks
        self._remote: RemoteEngine | None = None

    async def _engine(self) -> RemoteEngine:
        if self._remote is None:
            self._remote = await self._servers.serve(self._loader, self._config, self._hooks)
        return self._remote

    async def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> State:
        return await (await self._engine()).start(session_id, context)

    async def render(self, state: State) -> RenderResult:
        return await (await self._engine()).render(state)

    async def navigate(self, state: State, input: JSONValue | ToolResult) -> State:
        return await (await self._engine()).navigate(state, input)

    async def signal(self, state: State, name: str) -> State:
        return await (await self._engine()).signal(state, name)

    async def inspect(self) -> list[Node]:
        return await (await self._engine()).inspect()


# Set by the ``transport`` fixture (conftest.py) while a test runs over gRPC.
served_engines: ServedEngines | None = None


def make_engine(*nodes: Mapping[str, Any] | Node, **options: Any) -> Engine:
    if served_engines is not None:
        # Typed as Engine so the tests read as before; the tests that need more than
        # the EnginePort methods are in_process_only.
        return served_engines.engine(nodes, options)  # type: ignore[return-value]
    return Engine(MemoryLoader(nodes), **options)


class Recorder:
    """A lifecycle hook that remembers every event."""

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []

    def __call__(self, event: LifecycleEvent) -> None:
        self.events.append(event)

    def seen(self) -> list[tuple[str, str]]:
        out = []
        for e in self.events:
            name = e.tool_name if e.kind in (HookKind.TOOL_CALL, HookKind.TOOL_RETURN) else e.node_id
            out.append((e.kind.value, name))
        return out

    def clear(self) -> None:
        self.events.clear()


def ok(call_id: str, result: Any = None) -> ToolResult:
    return ToolResult(id=call_id, result=result)


def failed(call_id: str, error: str = "boom", result: Any = None) -> ToolResult:
    return ToolResult(id=call_id, result=result, is_error=True, error=error)


def denied(call_id: str) -> ToolResult:
    return ToolResult(id=call_id, is_denied=True, error="User denied execution by policy")
