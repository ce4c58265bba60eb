"""follow_graph in detail: what it hands ``on_change``, which watches it closes, what it
forgets when a watch is lost, how it backs off and what it logs while doing so."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.waiting import eventually
from trellis.adapters.memory_loader import MemoryLoader
from trellis.engine import Engine, follow_graph
from trellis.ports.loader import GraphChange

pytestmark = pytest.mark.in_process_only(reason="follows a loader under the engine object")


class Watch:
    """One watch stream: yields ``changes``, then fails with ``error``, ends (``error`` None),
    or, with ``stay_open``, waits until it is closed. Remembers whether it was closed."""

    def __init__(
        self, *changes: GraphChange, error: Exception | None = None, stay_open: bool = False
    ) -> None:
        self._changes = list(changes)
        self._error = error
        self._stay_open = stay_open
        self._done = asyncio.Event()
        self.closed = False

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> GraphChange:
        if self._changes:
            return self._changes.pop(0)
        if self._error is not None:
            raise self._error
        if self._stay_open:
            await self._done.wait()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True
        self._done.set()


class BareWatch:
    """An async iterator with no ``aclose`` (Watchable only promises an AsyncIterator): it ends at once."""

    def __aiter__(self) -> BareWatch:
        return self

    async def __anext__(self) -> GraphChange:
        raise StopAsyncIteration


class ScriptedLoader:
    """Serves the nodes of a MemoryLoader; each ``watch()`` takes the next step of
    ``script`` (a watch to return, or an exception to raise). When the script is used up
    it returns a watch that stays open, so the loop settles instead of spinning."""

    def __init__(self, memory: MemoryLoader, *script: Any) -> None:
        self._memory = memory
        self._script = list(script)
        self.opened = 0
        self.last: Watch | None = None

    async def get_node(self, node_id: str):  # type: ignore[no-untyped-def]
        return await self._memory.get_node(node_id)

    async def list_nodes(self) -> list[str]:
        return await self._memory.list_nodes()

    def watch(self) -> Any:
        self.opened += 1
        step = self._script.pop(0) if self._script else Watch(stay_open=True)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, Watch):
            self.last = step
        return step


async def until(check: Callable[[], bool], what: str) -> None:
    """Turn the event loop until ``check()`` holds (bounded: a safety net, not a timing)."""
    await eventually(check, what, within=10, interval=0.001)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError), f"follow_graph ended on its own: {results[0]!r}"


def _engine() -> tuple[MemoryLoader, Engine]:
    memory = MemoryLoader([{"id": "start", "content": "v1"}, {"id": "other", "content": "o1"}])
    return memory, Engine(memory)


async def test_on_change_gets_each_change_and_only_the_named_nodes_are_dropped() -> None:
    memory, engine = _engine()
    state = await engine.start("s")
    assert (await engine.render(state)).actions[0].payload == "v1"
    other = await engine.compiled("other")
    change = GraphChange(frozenset({"start"}), revision=7)
    loader = ScriptedLoader(memory, Watch(change, stay_open=True))
    memory.put({"id": "start", "content": "v2"})  # no watch is open yet: only ``change`` tells
    seen: list[GraphChange] = []
    task = asyncio.create_task(follow_graph(engine, loader, on_change=seen.append))
    try:
        await until(lambda: bool(seen), "on_change was never called")
        assert seen == [change]
        assert (await engine.render(state)).actions[0].payload == "v2"
        assert await engine.compiled("other") is other, "a node the change did not name was dropped"
    finally:
        await stop(task)


async def test_a_watch_is_closed_when_it_fails_and_when_following_stops() -> None:
    memory, engine = _engine()
    failing = Watch(error=OSError("backend restarted"))
    loader = ScriptedLoader(memory, failing)
    task = asyncio.create_task(follow_graph(engine, loader, first_delay=0.001))
    try:
        await until(lambda: loader.opened == 2, "the failed watch was not re-opened")
        assert failing.closed, "a failed watch was left open"
        current = loader.last
        assert current is not None and current is not failing and not current.closed
    finally:
        await stop(task)
    assert current.closed, "stopping follow_graph left its watch open"


async def test_a_watch_without_aclose_is_simply_dropped_and_reopened() -> None:
    memory, engine = _engine()
    loader = ScriptedLoader(memory, BareWatch())
    task = asyncio.create_task(follow_graph(engine, loader, first_delay=0.001))
    try:
        await until(lambda: loader.opened == 2 or task.done(), "the bare watch was not re-opened")
        assert not task.done(), f"follow_graph stopped: {task.exception() if not task.cancelled() else ''}"
    finally:
        await stop(task)


async def test_changes_made_while_no_watch_was_open_are_picked_up_on_reopen() -> None:
    memory, engine = _engine()
    state = await engine.start("s")
    assert (await engine.render(state)).actions[0].payload == "v1"
    memory.put({"id": "start", "content": "v2"})  # nobody watches: no change will ever name it
    loader = ScriptedLoader(memory, Watch())  # the first watch just ends
    task = asyncio.create_task(follow_graph(engine, loader, first_delay=0.001))
    try:
        await until(lambda: loader.opened == 2, "the ended watch was not re-opened")
        assert (await engine.render(state)).actions[0].payload == "v2"
    finally:
        await stop(task)


async def test_a_lost_watch_is_retried_only_after_the_rest_of_the_program_ran() -> None:
    """Retrying at once would starve everything else (and hammer a backend that is down):
    between two attempts other tasks get their turn, here the one that fixes the loader."""
    memory, engine = _engine()
    loader = ScriptedLoader(memory, *[OSError("down")] * 50)
    lost = asyncio.Event()
    reports: list[bool] = []

    def on_watching(open_again: bool) -> None:
        reports.append(open_again)
        if len(reports) > 40:
            raise RuntimeError("follow_graph retried without ever pausing")
        if not open_again:
            lost.set()

    async def fix() -> None:
        await lost.wait()
        loader._script.clear()  # the backend is back: the next watch stays open

    fixer = asyncio.create_task(fix())
    task = asyncio.create_task(follow_graph(engine, loader, on_watching=on_watching, first_delay=0.001))
    try:
        await until(lambda: task.done() or reports[-1:] == [True], "the watch was never open again")
        assert not task.done(), f"follow_graph stopped: {task.exception() if not task.cancelled() else ''}"
        assert loader.opened == 2 and reports == [False, True]
    finally:
        await stop(task)
        await fixer


async def test_the_retry_delay_doubles_and_the_log_says_why(caplog: pytest.LogCaptureFixture) -> None:
    memory, engine = _engine()
    loader = ScriptedLoader(memory, OSError("flow directory vanished"), Watch(), Watch(error=TimeoutError()))
    caplog.set_level(logging.WARNING, logger="trellis.engine")
    task = asyncio.create_task(follow_graph(engine, loader, first_delay=0.1))
    try:
        await until(lambda: loader.opened == 4, "the watch was not re-opened three times")
    finally:
        await stop(task)
    lines = [r.getMessage() for r in caplog.records if "graph watch" in r.getMessage()]
    assert lines == [
        "graph watch failed (flow directory vanished); re-opening it in 0.1s",
        "graph watch ended; re-opening it in 0.2s",
        # An exception with no message is named by its type.
        "graph watch failed (TimeoutError); re-opening it in 0.4s",
    ]
