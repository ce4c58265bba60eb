"""The stateless engine port: the caller carries the state (spec §3)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from trellis.domain import JSONValue, LifecycleEvent, Node, RenderResult, State, ToolResult

LifecycleHook = Callable[[LifecycleEvent], None]
"""Called synchronously, in order, for each lifecycle event (spec §12)."""


@runtime_checkable
class EnginePort(Protocol):
    async def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> State:
        """A fresh state at the entry node (spec §3.2)."""
        ...

    async def render(self, state: State) -> RenderResult:
        """The actions of the current node (spec §3.3). Never changes ``state``."""
        ...

    async def navigate(self, state: State, input: JSONValue | ToolResult) -> State:
        """The next state for an input or a tool result (spec §3.4). Never changes
        ``state``; on error nothing changes anywhere."""
        ...

    async def signal(self, state: State, name: str) -> State:
        """The next state after a signal (spec §3.8). Raises UnhandledSignal."""
        ...

    async def inspect(self) -> list[Node]:
        """Every node of the graph, sorted by ID (spec §3.9)."""
        ...

    def invalidate(self, node_ids: Iterable[str] | None = None) -> None:
        """Forget what was compiled for these nodes (all when None): the graph changed."""
        ...
