"""A render that fails does not fail the transition that reached the node
(docs/engine.md, "Rendering"): Start, Navigate and Signal return the state, and only Render raises. Over gRPC
the reply carries the render error beside the state, and the remote engine behaves
exactly like the in-process one (these tests run over both, see conftest.py)."""

from __future__ import annotations

import pytest

from trellis.errors import ContextValidationError, TemplateError

from .helpers import Recorder, make_engine

# The reproduction of issue 13: each node needs a key the previous one did not collect.
GUARDED = (
    {"id": "start", "required_context": ["api_key"], "to": "next"},
    {"id": "next", "required_context": ["token"], "wait": True, "to": "end"},
    {"id": "end"},
)


async def test_start_returns_the_state_when_the_entry_node_cannot_render() -> None:
    engine = make_engine(*GUARDED)
    state = await engine.start("s1")
    assert (state.current_node_id, state.session_id) == ("start", "s1")
    with pytest.raises(ContextValidationError) as info:
        await engine.render(state)
    assert info.value.missing_keys == ["api_key"]


async def test_navigate_returns_the_next_state_when_that_node_cannot_render() -> None:
    engine = make_engine(*GUARDED)
    state = await engine.start("s1", {"api_key": "k"})
    moved = await engine.navigate(state, "")
    assert moved.current_node_id == "next"
    assert moved.history[-2:] == ["start", "next"]
    with pytest.raises(ContextValidationError) as info:
        await engine.render(moved)
    assert info.value.missing_keys == ["token"]
    # The state still steps on once what the node needs is there.
    moved.context["token"] = "t"
    assert not (await engine.render(moved)).terminal
    assert (await engine.navigate(moved, "")).current_node_id == "end"


async def test_a_signal_leads_away_from_a_node_whose_template_is_broken() -> None:
    hooks = Recorder()
    engine = make_engine(
        {"id": "start", "to": "broken"},
        {"id": "broken", "content": "{{ if }", "wait": True, "on_signal": {"cancel": "fixed"}},
        {"id": "fixed", "content": "left the broken node", "on_signal": {"again": "broken"}},
        hooks=[hooks],
    )
    state = await engine.navigate(await engine.start("s"), "")
    assert state.current_node_id == "broken"
    with pytest.raises(TemplateError):
        await engine.render(state)
    hooks.clear()
    away = await engine.signal(state, "cancel")
    assert away.current_node_id == "fixed"
    assert hooks.seen() == [("node_leave", "broken"), ("node_enter", "fixed")]
    assert [a.payload for a in (await engine.render(away)).actions] == ["left the broken node"]
    # ...and a signal into it returns the state, the render error coming only from Render.
    back = await engine.signal(away, "again")
    assert back.current_node_id == "broken"
    with pytest.raises(TemplateError, match="rendering failed"):
        await engine.render(back)


async def test_events_of_a_move_into_an_unrenderable_node_are_delivered() -> None:
    hooks = Recorder()
    engine = make_engine(*GUARDED, hooks=[hooks])
    state = await engine.start("s1", {"api_key": "k"})
    assert hooks.seen() == [("node_enter", "start")]
    hooks.clear()
    await engine.navigate(state, "")
    assert hooks.seen() == [("node_leave", "start"), ("node_enter", "next")]
