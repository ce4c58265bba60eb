"""Signals, Inspect, hook payloads (docs/engine.md, "Signals and timeouts", "Lifecycle events"),
and the compiled-node cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from trellis.adapters.memory_loader import MemoryLoader
from trellis.domain import HookKind, Node, State, Status
from trellis.engine import Engine, follow_graph
from trellis.errors import (
    ConditionError,
    InvalidInput,
    NodeLoadError,
    NodeNotFound,
    UnhandledSignal,
    WatchNotSupported,
)

from .helpers import Recorder, make_engine, ok

# --- signals -----------------------------------------------------------------------------------


async def test_3_8_on_signal_moves_with_hooks() -> None:
    hooks = Recorder()
    engine = make_engine(
        {"id": "start", "wait": True, "on_timeout": "late", "to": "end"},
        {"id": "late"},
        {"id": "end"},
        hooks=[hooks],
    )
    state = await engine.start("s")
    hooks.clear()
    moved = await engine.signal(state, "timeout")
    assert moved.current_node_id == "late"
    assert moved.history == ["start", "late"]
    assert hooks.seen() == [("node_leave", "start"), ("node_enter", "late")]


async def test_3_8_entry_on_signal_default_is_the_fallback() -> None:
    engine = make_engine(
        {"id": "start", "on_signal_default": {"shutdown": "bye"}, "to": "middle"},
        {"id": "middle", "wait": True, "to": "end", "on_signal_default": {"other": "bye"}},
        {"id": "bye"},
        {"id": "end"},
    )
    middle = await engine.navigate(await engine.start("s"), "")
    assert (await engine.signal(middle, "shutdown")).current_node_id == "bye"
    assert (await engine.signal(await engine.start("s"), "shutdown")).current_node_id == "bye"
    with pytest.raises(UnhandledSignal):
        await engine.signal(middle, "other")  # only the entry node's defaults count


async def test_3_8_unhandled_signal_is_distinguishable() -> None:
    engine = make_engine({"id": "start"})
    with pytest.raises(UnhandledSignal) as info:
        await engine.signal(await engine.start("s"), "interrupt")
    assert info.value.signal == "interrupt"


async def test_3_8_missing_signal_target_is_a_load_error_not_unhandled() -> None:
    engine = make_engine({"id": "start", "on_interrupt": "ghost"})
    with pytest.raises(NodeNotFound):
        await engine.signal(await engine.start("s"), "interrupt")


async def test_3_8_missing_current_node_names_signal_handling() -> None:
    engine = make_engine({"id": "start"})
    with pytest.raises(NodeLoadError, match="during signal handling"):
        await engine.signal(State.new("s", "gone"), "interrupt")


async def test_3_8_signal_abandons_pending_tool_call() -> None:
    engine = make_engine(
        {"id": "start", "do": {"name": "slow"}, "on_signal": {"cancel": "end"}, "to": "end"}, {"id": "end"}
    )
    state = await engine.start("s")
    moved = await engine.signal(state, "cancel")
    assert moved.status is Status.ACTIVE and moved.pending_tool_call == ""
    assert moved.current_node_id == "end"


async def test_3_8_signal_revives_terminated_state_and_clears_flag_fix_17_8() -> None:
    engine = make_engine({"id": "start", "on_signal": {"manager_approval": "approved"}}, {"id": "approved"})
    done = await engine.navigate(await engine.start("s"), "")
    assert done.terminated
    revived = await engine.signal(done, "manager_approval")
    assert revived.status is Status.ACTIVE
    assert not revived.terminated
    assert revived.current_node_id == "approved"


async def test_3_8_signal_target_named_rollback_is_an_ordinary_node() -> None:
    engine = make_engine({"id": "start", "on_interrupt": "rollback"}, {"id": "rollback", "content": "a node"})
    moved = await engine.signal(await engine.start("s"), "interrupt")
    assert moved.current_node_id == "rollback" and moved.status is Status.ACTIVE


async def test_3_8_signal_leaves_input_state_alone() -> None:
    engine = make_engine({"id": "start", "on_interrupt": "x"}, {"id": "x"})
    state = await engine.start("s")
    before = state.to_json()
    await engine.signal(state, "interrupt")
    assert state.to_json() == before


# --- inspect -------------------------------------------------------------------------------------


async def test_3_9_inspect_lists_every_node_sorted() -> None:
    engine = make_engine({"id": "b"}, {"id": "start", "to": "b"}, {"id": "a"})
    assert [n.id for n in await engine.inspect()] == ["a", "b", "start"]


async def test_3_9_inspect_fails_when_a_node_does_not_compile() -> None:
    engine = make_engine({"id": "start", "transitions": [{"to": "x", "condition": "input ==="}]}, {"id": "x"})
    with pytest.raises(ConditionError, match=r"transitions\[0\]\.condition"):
        await engine.inspect()


# --- hook payloads (Lifecycle events) ------------------------------------------------------------


async def test_12_hook_payloads_carry_node_type_and_tool_data() -> None:
    hooks = Recorder()
    engine = make_engine(
        {"id": "start", "type": "question", "to": "act"},
        {"id": "act", "type": "tool", "do": {"name": "t", "args": {"n": "{{ .n }}"}}, "to": "end"},
        {"id": "end"},
        hooks=[hooks],
    )
    state = await engine.start("s", {"n": 2})
    state = await engine.navigate(state, "")
    leave, enter, call = hooks.events[1:4]
    assert (leave.kind, leave.node_id, leave.node_type) == (HookKind.NODE_LEAVE, "start", "question")
    assert (enter.kind, enter.node_id, enter.node_type) == (HookKind.NODE_ENTER, "act", "tool")
    assert (call.kind, call.tool_name, call.data) == (HookKind.TOOL_CALL, "t", {"n": "2"})
    assert (leave.is_error, enter.is_error, call.is_error) == (False, False, False)
    assert call.timestamp > 0
    await engine.navigate(state, ok("t", "r"))
    ret = hooks.events[4]
    assert (ret.kind, ret.node_id, ret.tool_name, ret.is_error) == (HookKind.TOOL_RETURN, "act", "t", False)


async def test_12_failing_hook_does_not_change_the_result(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: object) -> None:
        raise RuntimeError("hook bug")

    engine = make_engine({"id": "start", "to": "end"}, {"id": "end"}, hooks=[broken])
    moved = await engine.navigate(await engine.start("s"), "")
    assert moved.current_node_id == "end"
    # ... but it is logged, with its traceback, for whoever runs the hook.
    failures = [r for r in caplog.records if r.getMessage() == "lifecycle hook failed on node_leave"]
    assert failures and failures[0].exc_info is not None


# --- compiled-node cache ---------------------------------------------------------------------------


@pytest.mark.in_process_only(reason="changes the loader under the engine and calls engine.invalidate")
async def test_cache_keeps_compiled_node_until_invalidated() -> None:
    loader = MemoryLoader([{"id": "start", "content": "v1"}])
    engine = Engine(loader)
    state = await engine.start("s")
    assert (await engine.render(state)).actions[0].payload == "v1"
    loader.put({"id": "start", "content": "v2"})
    assert (await engine.render(state)).actions[0].payload == "v1"  # still the compiled node
    engine.invalidate(["start"])
    assert (await engine.render(state)).actions[0].payload == "v2"
    loader.put({"id": "start", "content": "v3"})
    engine.invalidate()
    assert (await engine.render(state)).actions[0].payload == "v3"


async def _followed_change(change: Callable[[MemoryLoader], None]) -> None:
    """The engine, following its loader, renders what ``change`` made of the start node."""
    loader = MemoryLoader([{"id": "start", "content": "v1"}])
    engine = Engine(loader)
    task = asyncio.create_task(follow_graph(engine, loader))
    try:
        state = await engine.start("s")
        assert (await engine.render(state)).actions[0].payload == "v1"
        await asyncio.sleep(0)
        change(loader)
        payload = "v1"
        for _ in range(100):  # bounded: the watch task needs a few loop turns
            await asyncio.sleep(0)
            payload = (await engine.render(state)).actions[0].payload  # type: ignore[assignment]
            if payload == "v2":
                break
        assert payload == "v2"
    finally:
        task.cancel()
        loader.close()


@pytest.mark.in_process_only(reason="changes the loader under the engine, followed by follow_graph")
async def test_cache_follows_a_change_of_the_whole_graph() -> None:
    # A change naming no node: all of them.
    await _followed_change(lambda loader: loader.replace_all([{"id": "start", "content": "v2"}]))


@pytest.mark.in_process_only(reason="changes the loader under the engine, followed by follow_graph")
async def test_cache_follows_loader_watch() -> None:
    await _followed_change(lambda loader: loader.put({"id": "start", "content": "v2"}))


class AliasingLoader(MemoryLoader):
    """Serves a node under a second name, the way a loader resolving paths or letter
    case would; ``gate``, when set, holds every load (after reading) until it is opened."""

    def __init__(self, nodes: list[dict[str, Any]], aliases: dict[str, str]) -> None:
        super().__init__(nodes)
        self.aliases = aliases
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def get_node(self, node_id: str) -> Node:
        node = await super().get_node(self.aliases.get(node_id, node_id))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return node


@pytest.mark.in_process_only(reason="changes the loader under the engine and calls engine.invalidate")
async def test_invalidating_a_node_forgets_it_under_every_name_it_was_asked_by() -> None:
    nodes = [{"id": "start", "content": "v1"}, {"id": "b", "content": "b"}]
    loader = AliasingLoader(nodes, {"Start": "start"})
    engine = Engine(loader)
    assert (await engine.compiled("Start")).node.content == "v1"
    await engine.compiled("b")
    loader.put({"id": "start", "content": "v2"})
    engine.invalidate(["b"])  # another node: the compiled "Start" stays
    assert (await engine.compiled("Start")).node.content == "v1"
    engine.invalidate(["start"])  # by its canonical ID
    assert (await engine.compiled("Start")).node.content == "v2"
    loader.put({"id": "start", "content": "v3"})
    engine.invalidate(["Start"])  # by the name it was asked by
    assert (await engine.compiled("Start")).node.content == "v3"


@pytest.mark.in_process_only(reason="changes the loader under the engine and calls engine.invalidate")
async def test_a_node_that_changed_while_it_was_loading_is_not_kept() -> None:
    loader = AliasingLoader([{"id": "start", "content": "v1"}], {})
    engine = Engine(loader)
    loader.gate = asyncio.Event()
    loading = asyncio.create_task(engine.compiled("start"))
    async with asyncio.timeout(10):
        await loader.entered.wait()
        loader.put({"id": "start", "content": "v2"})
        engine.invalidate(["start"])
        loader.gate.set()
        assert (await loading).node.content == "v1"  # what was read before the change
    loader.gate = None
    assert (await engine.compiled("start")).node.content == "v2"  # read again, not the stale one


@pytest.mark.in_process_only(reason="hands the engine a loader that cannot watch")
@pytest.mark.parametrize(
    "loader", [object(), type("NotCallable", (), {"watch": 5})()], ids=["no-watch", "watch-not-callable"]
)
async def test_a_loader_that_cannot_watch_is_refused(loader: object) -> None:
    engine = make_engine({"id": "start"})
    with pytest.raises(WatchNotSupported, match="does not support watching"):
        await follow_graph(engine, loader)  # type: ignore[arg-type]


@pytest.mark.in_process_only(reason="calls the engine with no state, which the wire cannot carry")
async def test_3_8_a_signal_needs_a_state() -> None:
    engine = make_engine({"id": "start"})
    with pytest.raises(InvalidInput, match="signal needs a state"):
        await engine.signal(None, "interrupt")  # type: ignore[arg-type]
