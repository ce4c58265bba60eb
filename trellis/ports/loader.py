"""GraphLoader and Watchable: where node definitions come from.

Errors named here are classes of ``trellis.errors``; trellis.contracts.loader
checks them.
"""

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

        Raises (trellis.errors): NodeNotFound (a NodeLoadError, its ``node_id``
        set) when no such node exists — also for an ID that tries to leave the
        graph (``..``, a leading ``/``, ``\\``); NodeDefinitionError (a
        NodeLoadError) naming the file and ``field`` when it exists but is
        invalid (a tool import cycle or a missing tool library included);
        BackendUnavailable when the backing store cannot be reached.
        """
        ...

    async def list_nodes(self) -> list[str]:
        """Every node ID, sorted (code-point order).

        Raises (trellis.errors): GraphError on ID collisions (two files defining one
        ID); BackendUnavailable when the backing store cannot be reached."""
        ...


@runtime_checkable
class Watchable(Protocol):
    def watch(self) -> AsyncIterator[GraphChange]:
        """Changes as they happen, debounced so that one edit or one publish is
        one event. Events may merge several changes but are never reordered, and
        their ``revision`` never goes down; by the time an event is delivered,
        ``get_node`` serves the changed definitions. Each call starts a new,
        independent watch: closing one (``aclose``) does not stop the others or
        later ones. The iterator ends when the loader is closed; cancelling the
        consumer stops the watch. Reconnects are the loader's business: after
        one, it resumes where it was, or sends a GraphChange with empty
        ``node_ids`` ("anything may have changed"). A loader that cannot watch
        does not implement Watchable; the server then answers a graph watch with
        WatchNotSupported (trellis.errors)."""
        ...
