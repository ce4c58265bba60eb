"""Drafts: nodes built from one definition whose tool imports (``tools``) are not resolved yet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trellis.domain import Node, Tool


@dataclass(frozen=True, slots=True)
class ToolImport:
    """A ``tools`` entry naming another node whose tools are imported (docs/engine.md, "Node fields")."""

    node_id: str


@dataclass(frozen=True, slots=True)
class NodeDraft:
    """A node built from one definition, before its tool imports are resolved.

    ``node.tools`` holds the inline tools only; ``tool_items`` keeps the ``tools``
    list in order (inline tools and imports) for the resolver.
    """

    node: Node
    tool_items: tuple[Tool | ToolImport, ...] = ()

    @property
    def imports(self) -> tuple[str, ...]:
        return tuple(item.node_id for item in self.tool_items if isinstance(item, ToolImport))


DraftLookup = Callable[[str], "NodeDraft | None"]
"""Finds the draft of another node by ID (None when there is no such node)."""
