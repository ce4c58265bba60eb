"""Tool libraries (``tools``, docs/engine.md, "Node fields"): resolving string imports
of other nodes' ``tools``.

Shared by every loader: a loader hands over a lookup from node ID to draft, and
gets back the node with its final, ordered tool list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from trellis.domain import Node, Tool
from trellis.errors import NodeDefinitionError, NodeNotFound
from trellis.loading.drafts import DraftLookup, NodeDraft, ToolImport


def resolve_tools(draft: NodeDraft, lookup: DraftLookup) -> Node:
    """The draft's node with imports replaced by the imported tools.

    Depth first, in list order. A later tool with an already-seen name replaces the
    earlier definition but keeps its position. Cycle detection uses the imports on the
    current path only, so diamonds are fine and ``a → b → a`` is an error.
    """
    if not draft.imports:
        return draft.node
    node = draft.node

    def fail(problem: str) -> NodeDefinitionError:
        return NodeDefinitionError(node.id, node.source, "tools", problem)

    def collect(items: Iterable[Tool | ToolImport], path: set[str]) -> dict[str, Tool]:
        merged: dict[str, Tool] = {}
        for item in items:
            if isinstance(item, Tool):
                merged[item.name] = item  # dict assignment keeps the first position of a name
                continue
            library = item.node_id
            if library in path:
                raise fail(f"cycle detected in tool imports: {library}")
            try:
                library_draft = lookup(library)
            except NodeNotFound:
                library_draft = None
            except NodeDefinitionError as exc:
                raise fail(f"cannot import tools from {library!r}: {exc.message}") from None
            if library_draft is None:
                raise fail(f"tool library {library!r} not found")
            path.add(library)
            for tool in collect(library_draft.tool_items, path).values():
                merged[tool.name] = tool
            path.discard(library)
        return merged

    return replace(node, tools=tuple(collect(draft.tool_items, set()).values()))


def importers_of(drafts: Mapping[str, NodeDraft], changed: Iterable[str]) -> set[str]:
    """``changed`` plus every node that imports tools from one of them, directly or not.

    A change to a tool library changes the resolved tools of its importers, so a
    watch event must name them too.
    """
    imported_by: dict[str, set[str]] = {}
    for node_id, draft in drafts.items():
        for library in draft.imports:
            imported_by.setdefault(library, set()).add(node_id)
    result = set(changed)
    pending = list(result)
    while pending:
        for importer in imported_by.get(pending.pop(), ()):
            if importer not in result:
                result.add(importer)
                pending.append(importer)
    return result
