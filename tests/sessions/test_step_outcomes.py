"""What a step leaves behind for the next one: a finished session still shows its
final text, and a step that failed or changed nothing gives its locks back, so
the session's next step runs (on every kind of store and locker)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.sessions.flows import PAYMENT, LockingMemoryStore, engine
from trellis.adapters.file_store import FileStore
from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import ActionType, State, Status
from trellis.errors import InvalidConfirmation
from trellis.sessions import SessionManager, render_state

Setup = Callable[[Path], dict[str, Any]]
SETUPS: dict[str, Setup] = {
    "memory-store+local-locker": lambda tmp: {"store": MemoryStore(), "locker": LocalLocker()},
    "file-store+local-locker": lambda tmp: {"store": FileStore(tmp / "sessions"), "locker": LocalLocker()},
    "step-store": lambda tmp: {"store": LockingMemoryStore()},
}

# A lock nobody gives back is only freed by its TTL: far longer than the test waits.
LONG_TTL = 600.0
WAIT = 20.0


def contents(actions: Any) -> list[str]:
    return [a.payload for a in actions if a.type is ActionType.RENDER_CONTENT]


async def test_a_finished_session_still_shows_its_final_text() -> None:
    flow = [{"id": "start", "content": "Hello", "to": "end"}, {"id": "end", "content": "Bye"}]
    manager = SessionManager(engine(flow), MemoryStore())
    await manager.start("s")
    shown = await manager.get("s")
    assert shown.state.status is Status.TERMINATED
    assert contents(shown.render.actions) == ["Bye"]
    assert shown.render.terminal
    again = await manager.start("s")  # loading a finished session shows the same
    assert contents(again.render.actions) == ["Bye"]


async def test_a_session_whose_rollback_fully_unwound_shows_nothing() -> None:
    flow = [{"id": "start", "content": "Hello", "wait": True}]
    state = State.new("s", "")
    state.status = Status.TERMINATED
    shown = await render_state(engine(flow), state)
    assert shown.actions == () and shown.terminal
    # The same node, still current, is rendered as usual.
    state.current_node_id = "start"
    assert contents((await render_state(engine(flow), state)).actions) == ["Hello"]


@pytest.mark.parametrize("setup", SETUPS.values(), ids=SETUPS.keys())
async def test_after_a_failed_step_the_next_step_runs(tmp_path: Path, setup: Setup) -> None:
    manager = SessionManager(engine(PAYMENT), lock_ttl=LONG_TTL, **setup(tmp_path))
    await manager.start("s")
    with pytest.raises(InvalidConfirmation):
        await manager.navigate("s", "perhaps")
    async with asyncio.timeout(WAIT):  # a lock left held would block here
        result = await manager.navigate("s", "yes")
    assert result.state.status is Status.WAITING_FOR_TOOL
    assert manager.lock_count() == 0


@pytest.mark.parametrize("setup", SETUPS.values(), ids=SETUPS.keys())
async def test_after_a_step_that_changed_nothing_the_next_step_runs(tmp_path: Path, setup: Setup) -> None:
    manager = SessionManager(engine(PAYMENT), lock_ttl=LONG_TTL, **setup(tmp_path))
    first = await manager.start("s")
    async with asyncio.timeout(WAIT):
        again = await manager.start("s")  # loads the session: nothing to save
        assert again.state.revision == first.state.revision
        result = await manager.navigate("s", "yes")
        await manager.delete("s")
    assert result.state.status is Status.WAITING_FOR_TOOL
    assert (await manager.list()).session_ids == []
