"""Broken GraphLoaders: each is MemoryLoader with one mistake in its watch."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trellis.adapters.memory_loader import MemoryLoader
from trellis.contracts.loader import GraphLoaderContract
from trellis.ports.loader import GraphChange, GraphLoader
from trellis.streams import QueueStream


class ReordersEvents(MemoryLoader):
    """Batches the changes of one moment and publishes them newest first."""

    def __init__(self, nodes: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(nodes)
        self._pending: list[frozenset[str]] = []

    def _changed(self, node_ids: frozenset[str]) -> None:
        self._pending.append(node_ids)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        pending, self._pending = self._pending[::-1], []  # the mistake: newest first
        for node_ids in pending:
            MemoryLoader._changed(self, node_ids)


class WatchesOnce(MemoryLoader):
    """Only the first watch is ever fed: a consumer that reconnects hears nothing."""

    def __init__(self, nodes: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(nodes)
        self._watched = False

    def watch(self) -> QueueStream[GraphChange]:
        if self._watched:
            return QueueStream[GraphChange]()  # the mistake
        self._watched = True
        return super().watch()


class ServesStaleNodes(MemoryLoader):
    """Reports a change but keeps serving the nodes it had already built."""

    def _changed(self, node_ids: frozenset[str]) -> None:
        self._revision += 1  # the mistake: the built nodes (self._resolved) are kept
        for stream in list(self._streams):
            stream.publish(GraphChange(node_ids=node_ids, revision=self._revision))


class _Contract(GraphLoaderContract):
    loader_class: type[MemoryLoader] = MemoryLoader
    watch_bound = 3.0  # a memory loader reports at once: a short bound keeps failures quick
    retrigger_after = 0.5

    async def make_loader(self, tmp_path: Path, definitions: Sequence[Mapping[str, Any]]) -> GraphLoader:
        return self.loader_class(definitions)

    async def close_loader(self, loader: GraphLoader) -> None:
        assert isinstance(loader, MemoryLoader)
        loader.close()

    async def put_definition(self, loader: GraphLoader, definition: Mapping[str, Any]) -> None:
        assert isinstance(loader, MemoryLoader)
        loader.put(definition)

    async def remove_definition(self, loader: GraphLoader, node_id: str) -> None:
        assert isinstance(loader, MemoryLoader)
        loader.remove(node_id)


class TestBaseline(_Contract):
    pass


class TestReordersEvents(_Contract):
    loader_class = ReordersEvents


class TestWatchesOnce(_Contract):
    loader_class = WatchesOnce


class TestServesStaleNodes(_Contract):
    loader_class = ServesStaleNodes


CAUGHT_BY = {
    "TestReordersEvents": ["test_watch_reports_changes_in_the_order_they_were_made"],
    "TestWatchesOnce": ["test_a_new_watch_reports_changes_after_an_earlier_one_was_closed"],
    "TestServesStaleNodes": ["test_watch_reports_a_changed_node_and_the_new_definition_is_served"],
}
