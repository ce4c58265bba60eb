"""Shared helpers for the engine tests: graphs are written in file form (the same
sugar as Markdown/YAML files) and loaded through the real MemoryLoader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trellis.adapters.memory_loader import MemoryLoader
from trellis.domain import HookKind, LifecycleEvent, Node, ToolResult
from trellis.engine import Engine


def make_engine(*nodes: Mapping[str, Any] | Node, **options: Any) -> Engine:
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
