"""RenderResult.signals: the signals the current node accepts (its on_signal and the
entry node's on_signal_default), sorted, and kept current when the graph changes."""

from __future__ import annotations

import pytest

from tests.engine.helpers import make_engine
from trellis.adapters.memory_loader import MemoryLoader
from trellis.engine.engine import Engine

ENTRY = {"id": "start", "on_signal_default": {"interrupt": "start"}, "to": "ask"}
ASK = {"id": "ask", "wait": True, "on_signal": {"timeout": "start", "approve": "start"}, "to": "start"}


async def test_render_lists_the_node_s_and_the_entry_s_signals() -> None:
    engine = make_engine(ENTRY, ASK)
    state = await engine.navigate(await engine.start("s"), "")
    assert state.current_node_id == "ask"
    assert (await engine.render(state)).signals == ("approve", "interrupt", "timeout")
    # Signals are information for hosts: renders compare as before.
    assert await engine.render(state) == await engine.render(state)


@pytest.mark.in_process_only(reason="changes the in-process engine's graph and compiled cache")
async def test_the_signals_follow_a_changed_entry_node() -> None:
    loader = MemoryLoader([ENTRY, ASK])
    engine = Engine(loader)
    state = await engine.navigate(await engine.start("s"), "")
    assert (await engine.render(state)).signals == ("approve", "interrupt", "timeout")
    loader.put({"id": "start", "to": "ask"})  # the entry no longer catches interrupt
    engine.invalidate(["start"])
    assert (await engine.render(state)).signals == ("approve", "timeout")
