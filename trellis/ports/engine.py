"""The stateless engine port: the caller carries the state (docs/engine.md).

Errors are classes of ``trellis.errors``. Every method may also raise what the
graph loader raises for a node it needs (NodeNotFound, NodeDefinitionError,
GraphError, BackendUnavailable; see trellis.ports.loader).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from trellis.domain import JSONValue, LifecycleEvent, Node, RenderResult, State, ToolResult

LifecycleHook = Callable[[LifecycleEvent], None]
"""Called synchronously, in order, for each lifecycle event (docs/engine.md, "Lifecycle events")."""


def deliver(hooks: Sequence[LifecycleHook], events: Iterable[LifecycleEvent], log: logging.Logger) -> None:
    """Each event to each hook, in order, wherever the events were fired (in process, or
    replayed from a reply): what a hook raises is logged on ``log``, never raised."""
    for event in events:
        for hook in hooks:
            try:
                hook(event)
            except Exception:
                log.exception("lifecycle hook failed on %s", event.kind.value)


@runtime_checkable
class EnginePort(Protocol):
    async def start(self, session_id: str, context: Mapping[str, JSONValue] | None = None) -> State:
        """A fresh state at the entry node (docs/engine.md, "Transitions"). Raises only what the
        loader raises for the entry node."""
        ...

    async def render(self, state: State) -> RenderResult:
        """The actions of the current node (docs/engine.md, "Rendering"). Never changes ``state``.
        Raises TemplateError for content that does not render, ContextValidationError /
        ContextTypeValidationError for a node's missing or mistyped context keys."""
        ...

    async def navigate(self, state: State, input: JSONValue | ToolResult) -> State:
        """The next state for an input or a tool result (docs/engine.md, "Input", "Tools and
        sagas"). Never changes ``state``; on error nothing changes anywhere.

        Raises SessionTerminated (the session ended), InvalidInput /
        InvalidConfirmation (input the node cannot take), ExpectedToolResult /
        UnexpectedToolResult / ToolResultMismatch (a tool result where none, or
        another, is pending), UnhandledToolError (a failed tool with no
        ``on_error``), ConditionError / ConditionOverBudget, TemplateError,
        ReservedNamespace (``save_to`` naming ``sys``), ContextValidationError / ContextTypeValidationError,
        ExecutionViolation (a graph that loops without waiting)."""
        ...

    async def signal(self, state: State, name: str) -> State:
        """The next state after a signal (docs/engine.md, "Signals and timeouts"). Raises UnhandledSignal when
        neither the node nor the entry node handles it, SessionTerminated, and what
        ``navigate`` raises for the steps that follow."""
        ...

    async def inspect(self) -> list[Node]:
        """Every node of the graph, sorted by ID (docs/api.md, "Engine")."""
        ...

    def invalidate(self, node_ids: Iterable[str] | None = None) -> None:
        """Forget what was compiled for these nodes (all when None): the graph changed."""
        ...
