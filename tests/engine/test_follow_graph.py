"""follow_graph keeps hot reload alive when a watch stream ends or fails."""

from __future__ import annotations

import asyncio

import pytest

from trellis.adapters.memory_loader import MemoryLoader
from trellis.engine import Engine, follow_graph
from trellis.ports.loader import GraphChange
from trellis.streams import QueueStream

pytestmark = pytest.mark.in_process_only(reason="follows a loader under the engine object")


class FlakyWatches:
    """A MemoryLoader whose first watch ends at once and whose second fails: what a
    loader does when its directory is removed or its backend restarts."""

    def __init__(self, loader: MemoryLoader) -> None:
        self._loader = loader
        self.opened = 0

    async def get_node(self, node_id: str):  # type: ignore[no-untyped-def]
        return await self._loader.get_node(node_id)

    async def list_nodes(self) -> list[str]:
        return await self._loader.list_nodes()

    def watch(self) -> QueueStream[GraphChange]:
        self.opened += 1
        if self.opened == 1:
            ended = QueueStream[GraphChange]()
            ended.end()
            return ended
        if self.opened == 2:
            raise OSError("flow directory vanished")
        return self._loader.watch()


async def test_a_watch_that_ends_or_fails_is_reopened_and_changes_reach_the_engine() -> None:
    memory = MemoryLoader([{"id": "start", "content": "v1"}])
    loader = FlakyWatches(memory)
    engine = Engine(loader)
    state = await engine.start("s")
    assert (await engine.render(state)).actions[0].payload == "v1"
    seen: list[bool] = []
    task = asyncio.create_task(follow_graph(engine, loader, on_watching=seen.append, first_delay=0.01))
    try:
        for _ in range(500):  # bounded: two back-offs of 10 and 20 ms
            if loader.opened >= 3:
                break
            await asyncio.sleep(0.01)
        assert loader.opened == 3
        memory.put({"id": "start", "content": "v2"})
        payload = "v1"
        for _ in range(200):
            payload = (await engine.render(state)).actions[0].payload
            if payload == "v2":
                break
            await asyncio.sleep(0.01)
        assert payload == "v2"
        # Lost twice (ended, then failed), open again once the third watch was taken.
        assert seen[:2] == [False, False] and seen[-1] is True
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
