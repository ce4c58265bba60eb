"""Render details the other render tests leave out: a fully unwound session, signals on
every render (the engine remembers them per node), on an engine that has not compiled
the entry node yet, and the compiled nodes the engine lets go of when told to forget."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from trellis.adapters.memory_loader import MemoryLoader
from trellis.domain import Node, RenderResult, Status
from trellis.engine import Engine
from trellis.engine.compiled import CompiledNode

from .helpers import failed, make_engine

ENTRY = {"id": "start", "on_signal_default": {"interrupt": "start"}, "to": "ask"}
ASK = {"id": "ask", "wait": True, "on_signal": {"timeout": "start", "approve": "start"}, "to": "start"}
SIGNALS = ("approve", "interrupt", "timeout")


async def test_a_session_whose_rollback_fully_unwound_renders_nothing_terminally() -> None:
    engine = make_engine(
        {"id": "start", "to": "act"},
        {"id": "act", "do": {"name": "charge"}, "on_error": "rollback", "to": "end"},
        {"id": "end"},
    )
    state = await engine.navigate(await engine.start("s"), "")
    assert state.status is Status.WAITING_FOR_TOOL
    done = await engine.navigate(state, failed("charge"))
    assert done.status is Status.TERMINATED and done.current_node_id == ""
    assert await engine.render(done) == RenderResult(actions=(), terminal=True)


async def test_every_render_lists_the_signals_not_only_the_first() -> None:
    engine = make_engine(ENTRY, ASK)
    state = await engine.navigate(await engine.start("s"), "")
    for _ in range(3):
        assert (await engine.render(state)).signals == SIGNALS


async def test_an_engine_that_never_compiled_the_entry_node_still_lists_its_signals() -> None:
    """A session carried over to a fresh engine (a restarted server) at a node other than the entry."""
    first = make_engine(ENTRY, ASK)
    state = await first.navigate(await first.start("s"), "")
    assert state.current_node_id == "ask"
    fresh = make_engine(ENTRY, ASK)
    assert (await fresh.render(state)).signals == SIGNALS
    assert (await fresh.render(state)).signals == SIGNALS


class AliasingLoader(MemoryLoader):
    """Serves a node under a second name too (as a loader resolving letter case would)."""

    def __init__(self, nodes: list[dict[str, Any]], aliases: dict[str, str]) -> None:
        super().__init__(nodes)
        self.aliases = aliases

    async def get_node(self, node_id: str) -> Node:
        return await super().get_node(self.aliases.get(node_id, node_id))


@pytest.mark.in_process_only(reason="changes the loader under the engine without telling it")
async def test_two_compilations_of_one_node_each_render_their_own_signals() -> None:
    """Asked by two names, one node is compiled twice; if the graph changed in between
    (an engine not following its loader), each session renders the node it got, signals included."""
    loader = AliasingLoader([ENTRY, ASK], {"Ask": "ask"})
    engine = Engine(loader)
    at_alias = await engine.start("a")
    at_alias.current_node_id = "Ask"  # as a signal or a transition naming "Ask" would leave it
    assert (await engine.render(at_alias)).signals == SIGNALS
    loader.put({**ASK, "on_signal": {"reject": "start"}})
    at_ask = await engine.navigate(await engine.start("b"), "")
    assert at_ask.current_node_id == "ask"
    for _ in range(2):
        assert (await engine.render(at_ask)).signals == ("interrupt", "reject")
        assert (await engine.render(at_alias)).signals == SIGNALS


@pytest.mark.in_process_only(reason="changes the loader under the engine without telling it")
async def test_the_entry_node_and_a_later_compilation_of_it_keep_their_own_signals() -> None:
    """The same for the entry node itself, asked by a second name after its file changed."""
    loader = AliasingLoader([{**ENTRY, "on_signal": {"pause": "ask"}}, ASK], {"Start": "start"})
    engine = Engine(loader)
    at_entry = await engine.start("a")
    assert (await engine.render(at_entry)).signals == ("interrupt", "pause")
    loader.put({**ENTRY, "on_signal": {"resume": "ask"}})
    at_alias = await engine.start("b")
    at_alias.current_node_id = "Start"
    for _ in range(2):
        assert (await engine.render(at_alias)).signals == ("interrupt", "resume")
        assert (await engine.render(at_entry)).signals == ("interrupt", "pause")


class GatedEntryLoader(MemoryLoader):
    """Holds every load of the entry node ``start`` (after reading it) while ``gate`` is set."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        super().__init__(nodes)
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def get_node(self, node_id: str) -> Node:
        node = await super().get_node(node_id)
        if node_id == "start" and self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        return node


@pytest.mark.in_process_only(reason="changes the loader under the engine and calls engine.invalidate")
async def test_signals_read_from_an_entry_node_that_changed_meanwhile_are_not_kept() -> None:
    loader = GatedEntryLoader([ENTRY, ASK])
    engine = Engine(loader)
    state = await engine.start("s")
    engine.invalidate()  # a restarted engine: the entry node is not compiled
    state.current_node_id = "ask"
    loader.gate = asyncio.Event()
    rendering = asyncio.create_task(engine.render(state))
    async with asyncio.timeout(10):
        await loader.entered.wait()
        loader.put({"id": "start", "to": "ask"})  # the entry no longer catches interrupt
        engine.invalidate(["start"])
        loader.gate.set()
        assert (await rendering).signals == SIGNALS  # what was read before the change
    loader.gate = None
    assert (await engine.render(state)).signals == ("approve", "timeout")


def _compiled_alive(node_id: str) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is CompiledNode and o.id == node_id)


@pytest.mark.in_process_only(reason="looks at the in-process engine's compiled nodes")
async def test_forgetting_every_node_lets_the_compiled_nodes_go() -> None:
    """After a reload (invalidate) the old compiled nodes are freed, not held until the next render."""
    node_id = "render-signals-cache-ask"
    engine = Engine(MemoryLoader([ENTRY, {**ASK, "id": node_id}]))
    state = await engine.start("s")
    state.current_node_id = node_id
    assert (await engine.render(state)).signals == SIGNALS
    assert _compiled_alive(node_id) == 1
    engine.invalidate()
    assert _compiled_alive(node_id) == 0
    assert (await engine.render(state)).signals == SIGNALS
