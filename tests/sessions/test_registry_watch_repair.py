"""Session manager housekeeping: no leaked locks or watchers, change streams, signals, resume repair."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from tests.sessions.flows import COUNTER, PAYMENT, CountingTool, engine
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import Node, StateDiff, Status
from trellis.engine import Engine
from trellis.errors import NodeLoadError
from trellis.sessions import SessionManager


async def test_the_lock_registry_is_empty_after_ten_thousand_sessions() -> None:
    locker = LocalLocker()
    manager = SessionManager(
        engine(COUNTER),
        MemoryStore(),
        locker=locker,
        dispatcher=InProcessDispatcher({"increment": CountingTool()}),
    )

    async def session(n: int) -> None:
        await manager.start(f"s{n}")
        await manager.navigate(f"s{n}", "go")

    async with asyncio.timeout(120):
        for batch in range(0, 10_000, 500):
            await asyncio.gather(*(session(n) for n in range(batch, batch + 500)))
    assert len((await manager.list()).session_ids) == 10_000
    assert manager.lock_count() == 0
    assert locker.key_count() == 0


async def test_cancelled_and_failed_steps_leave_no_lock_behind() -> None:
    gate, entered = asyncio.Event(), asyncio.Event()

    async def blocked(args: dict[str, Any]) -> int:
        entered.set()
        await gate.wait()
        return 1

    manager = SessionManager(
        engine(COUNTER), MemoryStore(), dispatcher=InProcessDispatcher({"increment": blocked})
    )
    await manager.start("s")
    steps = [asyncio.create_task(manager.navigate("s", "go")) for _ in range(5)]
    async with asyncio.timeout(10):
        await entered.wait()
    assert manager.lock_count() == 1
    for step in steps:
        step.cancel()
    await asyncio.gather(*steps, return_exceptions=True)
    failing = [manager.navigate("missing", "x") for _ in range(5)]
    await asyncio.gather(*failing, return_exceptions=True)
    assert manager.lock_count() == 0
    assert (await manager.get("s")).state.revision == 1


async def test_watchers_see_each_committed_step_and_end_on_delete() -> None:
    manager = SessionManager(
        engine(COUNTER), MemoryStore(), dispatcher=InProcessDispatcher({"increment": CountingTool()})
    )
    await manager.start("s")
    watch = manager.watch("s")
    other = manager.watch("unrelated")
    await manager.navigate("s", "go")
    await manager.navigate("s", "go")
    await manager.delete("s")
    changes: list[StateDiff] = []
    async with asyncio.timeout(10):
        async for change in watch:
            changes.append(change)
    assert [c.context for c in changes] == [
        {"n": 1, "tool_result": {"_id": "increment", "result": 1}},
        {"n": 2, "tool_result": {"_id": "increment", "result": 2}},
    ]
    assert [c.history_appended for c in changes] == [("bump", "ask")] * 2
    assert all(c.session_id == "s" for c in changes)
    await other.aclose()
    assert manager.watcher_count() == 0


async def test_a_failed_step_publishes_nothing_and_dropped_watches_unsubscribe() -> None:
    manager = SessionManager(engine(PAYMENT), MemoryStore())
    await manager.start("s")
    async with manager.watch("s") as watch:
        try:
            await manager.navigate("s", "perhaps")
        except Exception:
            pass
        await manager.navigate("s", "yes")
        async with asyncio.timeout(10):
            change = await anext(watch)
    assert change.status is Status.WAITING_FOR_TOOL and change.context == {"ok": "yes"}
    manager.watch("s")  # never used, never closed
    gc.collect()
    assert manager.watcher_count() == 0


async def test_signals_are_durable_steps() -> None:
    flow = [
        {"id": "start", "wait": True, "to": "start", "on_interrupt": "bye"},
        {"id": "bye", "content": "Interrupted"},
    ]
    manager = SessionManager(engine(flow), MemoryStore())
    await manager.start("s")
    result = await manager.signal("s", "interrupt")
    assert [a.payload for a in result.render.actions] == ["Interrupted"]
    assert result.terminal and (await manager.get("s")).state.status is Status.TERMINATED


async def test_repair_after_reload_resets_only_states_whose_tool_is_gone() -> None:
    original = SessionManager(engine(PAYMENT), MemoryStore())
    await original.start("s")
    waiting = (await original.navigate("s", "yes")).state
    assert waiting.status is Status.WAITING_FOR_TOOL

    tool_kept = SessionManager(engine(PAYMENT), MemoryStore())
    assert await tool_kept.repair_after_reload(waiting) is waiting

    # A text node that still has a ``do`` (universal action) keeps its pending call
    # (docs/engine-differences.md, fix #4).
    universal = [dict(n, type="text") if n["id"] == "charge" else n for n in PAYMENT]
    assert await SessionManager(engine(universal), MemoryStore()).repair_after_reload(waiting) is waiting

    no_tool = [
        {"id": "charge", "content": "no tool any more", "to": "done"} if n["id"] == "charge" else n
        for n in PAYMENT
    ]
    for flow in (no_tool, [n for n in PAYMENT if n["id"] != "charge"]):
        repaired = await SessionManager(engine(flow), MemoryStore()).repair_after_reload(waiting)
        assert repaired.status is Status.ACTIVE and repaired.pending_tool_call == ""
        assert repaired.current_node_id == "charge" and repaired.history == waiting.history
    assert waiting.status is Status.WAITING_FOR_TOOL  # the caller's state is not changed


async def test_repair_leaves_a_state_that_waits_for_no_tool_alone() -> None:
    manager = SessionManager(engine(PAYMENT), MemoryStore())
    active = (await manager.start("s")).state
    assert active.status is Status.ACTIVE
    assert await manager.repair_after_reload(active) is active


async def test_repair_says_why_it_resumed_a_session(caplog: pytest.LogCaptureFixture) -> None:
    original = SessionManager(engine(PAYMENT), MemoryStore())
    await original.start("s")
    waiting = (await original.navigate("s", "yes")).state
    gone = {"id": "charge", "content": "gone", "to": "done"}
    no_tool = [gone if n["id"] == "charge" else n for n in PAYMENT]
    removed = [n for n in PAYMENT if n["id"] != "charge"]
    for flow in (no_tool, removed):
        await SessionManager(engine(flow), MemoryStore()).repair_after_reload(waiting)
    waited = f"session 's' was waiting for tool call {waiting.pending_tool_call!r} but node 'charge'"
    assert caplog.messages == [
        f"{waited} no longer calls a tool; resuming it as active",
        f"{waited} no longer exists; resuming it as active",
    ]


async def test_repair_resumes_when_the_graph_cannot_be_inspected(caplog: pytest.LogCaptureFixture) -> None:
    class Blind(Engine):
        async def inspect(self) -> list[Node]:
            raise NodeLoadError("graph", "directory unreadable")

    original = SessionManager(engine(PAYMENT), MemoryStore())
    await original.start("s")
    waiting = (await original.navigate("s", "yes")).state
    repaired = await SessionManager(Blind(MemoryLoader(PAYMENT)), MemoryStore()).repair_after_reload(waiting)
    assert repaired.status is Status.ACTIVE and repaired.pending_tool_call == ""
    assert caplog.messages[0].startswith("cannot inspect the graph to check session 's': ")
    assert "directory unreadable" in caplog.messages[0]
