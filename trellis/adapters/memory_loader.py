"""MemoryLoader: a graph of canonical nodes held in memory, with change notifications.

``Node`` objects are canonical and taken as they are (no sugar: no default type,
no default tool-call IDs). Mappings are definitions in file form and go through the
same sugar as files (``trellis.loading.build_draft``); they need an ``id`` and may
carry the body under ``content``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from trellis.domain import Node
from trellis.errors import NodeDefinitionError, NodeNotFound
from trellis.loading import NodeDraft, build_draft, importers_of, resolve_tools
from trellis.ports.loader import GraphChange
from trellis.streams import QueueStream

NodeInput = Node | Mapping[str, Any]


def _draft(item: NodeInput) -> NodeDraft:
    if isinstance(item, Node):
        return NodeDraft(node=item, tool_items=item.tools)
    if not isinstance(item, Mapping):
        raise TypeError(f"expected a Node or a mapping, got {type(item).__name__}")
    node_id = item.get("id")
    source = f"<memory:{node_id}>" if isinstance(node_id, str) and node_id else "<memory>"
    if not isinstance(node_id, str) or not node_id:
        raise NodeDefinitionError(str(node_id or ""), source, "id", "is required (a non-empty string)")
    data = dict(item)
    content = data.pop("content", None)
    if content is not None and not isinstance(content, str):
        raise NodeDefinitionError(node_id, source, "content", "expected a string")
    return build_draft(node_id, data, content, source=source)


class MemoryLoader:
    """A GraphLoader and Watchable over nodes kept in a dict.

    Every ``put``/``remove``/``replace_all`` publishes one GraphChange naming the
    changed IDs (and the nodes that import tools from them); ``replace_all`` publishes
    an empty set, meaning "anything may have changed".
    """

    def __init__(self, nodes: Iterable[NodeInput] = ()) -> None:
        self._drafts: dict[str, NodeDraft] = {}
        self._resolved: dict[str, Node] = {}
        # Weak: a consumer that drops its stream must not leave it filling up here.
        self._streams: weakref.WeakSet[QueueStream[GraphChange]] = weakref.WeakSet()
        self._revision = 0
        for item in nodes:
            draft = _draft(item)
            self._drafts[draft.node.id] = draft

    async def get_node(self, node_id: str) -> Node:
        node = self._resolved.get(node_id)
        if node is None:
            draft = self._drafts.get(node_id)
            if draft is None:
                raise NodeNotFound(node_id)
            node = resolve_tools(draft, self._drafts.get)
            self._resolved[node_id] = node
        return node

    async def list_nodes(self) -> list[str]:
        return sorted(self._drafts)

    def put(self, node: NodeInput) -> str:
        """Add or replace one node; returns its ID. Raises NodeDefinitionError for a bad mapping."""
        draft = _draft(node)
        node_id = draft.node.id
        changed = importers_of(self._drafts, [node_id])
        self._drafts[node_id] = draft
        self._changed(frozenset(changed | importers_of(self._drafts, [node_id])))
        return node_id

    def remove(self, node_id: str) -> None:
        """Remove one node. Raises NodeNotFound when there is no such node."""
        if node_id not in self._drafts:
            raise NodeNotFound(node_id)
        changed = importers_of(self._drafts, [node_id])
        del self._drafts[node_id]
        self._changed(frozenset(changed))

    def replace_all(self, nodes: Iterable[NodeInput]) -> None:
        """Swap the whole graph at once (all definitions are checked before anything changes)."""
        drafts: dict[str, NodeDraft] = {}
        for item in nodes:
            draft = _draft(item)
            drafts[draft.node.id] = draft
        self._drafts = drafts
        self._changed(frozenset())

    def watch(self) -> QueueStream[GraphChange]:
        """Changes from now on, one GraphChange per put/remove/replace_all."""
        stream = QueueStream[GraphChange](on_close=self._streams.discard)
        self._streams.add(stream)
        return stream

    def close(self) -> None:
        """End every watch stream."""
        for stream in list(self._streams):
            stream.end()
        self._streams.clear()

    def _changed(self, node_ids: frozenset[str]) -> None:
        self._resolved.clear()
        self._revision += 1
        change = GraphChange(node_ids=node_ids, revision=self._revision)
        for stream in list(self._streams):
            stream.publish(change)
