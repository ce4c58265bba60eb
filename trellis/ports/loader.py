"""GraphLoader and Watchable: where node definitions come from."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from trellis.domain import Node


@dataclass(frozen=True, slots=True)
class GraphChange:
    """One change of a graph. Empty ``node_ids`` means "anything may have changed":
    drop every compiled node (used after a full reload, e.g. a compacted etcd watch)."""

    node_ids: frozenset[str] = frozenset()
    revision: int = 0


@runtime_checkable
class GraphLoader(Protocol):
    async def get_node(self, node_id: str) -> Node:
        """The canonical node for ``node_id``.

        Raises NodeNotFound when no such node exists, NodeDefinitionError (a
        NodeLoadError) naming the file and field when it exists but is invalid,
        BackendUnavailable when the backing store cannot be reached.
        """
        ...

    async def list_nodes(self) -> list[str]:
        """Every node ID, sorted. Raises GraphError on ID collisions,
        BackendUnavailable when the backing store cannot be reached."""
        ...


@runtime_checkable
class Watchable(Protocol):
    def watch(self) -> AsyncIterator[GraphChange]:
        """Changes as they happen, debounced so that one edit or one publish is
        one event. The iterator ends when the loader is closed; cancelling the
        consumer stops the watch. Reconnects are the loader's business."""
        ...
