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
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import ActionType, State, Status
from trellis.errors import BackendUnavailable, InvalidConfirmation, SessionNotFound
from trellis.sessions import SessionManager

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
    first = await manager.start("s")
    assert contents(first.render.actions) == ["Hello", "Bye"]
    assert first.render.terminal  # what the CLI's JSON view reports
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
    shown = await engine(flow).render(state)
    assert shown.actions == () and shown.terminal
    # The same node, still current, is rendered as usual.
    state.current_node_id = "start"
    assert contents((await engine(flow).render(state)).actions) == ["Hello"]


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
        await manager.start("s")  # the delete gave its lock back too
    assert result.state.status is Status.WAITING_FOR_TOOL
    assert (await manager.list()).session_ids == ["s"]


async def test_a_served_tool_nodes_text_is_shown_on_the_way() -> None:
    flow = [
        {"id": "start", "wait": True, "to": "work"},
        {"id": "work", "content": "Working on it", "do": {"name": "job"}, "save_to": "out", "to": "done"},
        {"id": "done", "content": "Result: {{ .out }}", "wait": True, "to": "done"},
    ]
    dispatcher = InProcessDispatcher({"job": lambda a: 42})
    manager = SessionManager(engine(flow), MemoryStore(), dispatcher=dispatcher)
    await manager.start("s")
    result = await manager.navigate("s", "go")
    assert contents(result.render.actions) == ["Working on it", "Result: 42"]


async def test_a_node_needing_no_input_whose_transitions_do_not_match_waits_there() -> None:
    flow = [
        {"id": "start", "content": "Checking", "transitions": [{"to": "adult", "condition": "age >= 18"}]},
        {"id": "adult", "content": "Welcome", "wait": True, "to": "adult"},
    ]
    manager = SessionManager(engine(flow), MemoryStore())
    waiting = await manager.start("s", {"age": 12})
    assert waiting.state.current_node_id == "start" and waiting.state.status is Status.ACTIVE
    assert contents(waiting.render.actions) == ["Checking"]
    assert (await manager.get("s")).state.history == ["start"]
    moved = await manager.start("t", {"age": 30})
    assert moved.state.current_node_id == "adult"
    assert contents(moved.render.actions) == ["Checking", "Welcome"]


async def test_a_release_that_fails_is_logged_and_the_step_still_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class ReleaseFails(LockingMemoryStore):
        async def save_and_unlock(self, handle: Any, session_id: str, state: State | None) -> int:
            if state is None:
                await handle.unlock()
                raise ConnectionError("connection reset")
            return await super().save_and_unlock(handle, session_id, state)

    manager = SessionManager(engine(PAYMENT), ReleaseFails())
    first = await manager.start("s")
    again = await manager.start("s")  # nothing to save: only a release, which fails
    assert again.state.revision == first.state.revision
    assert "failed to release the lock of session 's': connection reset" in caplog.messages


@pytest.mark.parametrize("setup", SETUPS.values(), ids=SETUPS.keys())
async def test_delete_removes_the_session_on_every_kind_of_store(tmp_path: Path, setup: Setup) -> None:
    manager = SessionManager(engine(PAYMENT), lock_ttl=LONG_TTL, **setup(tmp_path))
    await manager.start("s")
    await manager.delete("s")
    with pytest.raises(SessionNotFound):
        await manager.get("s")


@pytest.mark.parametrize("setup", SETUPS.values(), ids=SETUPS.keys())
async def test_watchers_see_steps_on_every_kind_of_store(tmp_path: Path, setup: Setup) -> None:
    manager = SessionManager(engine(PAYMENT), lock_ttl=LONG_TTL, **setup(tmp_path))
    await manager.start("s")
    async with manager.watch("s") as watch:
        await manager.navigate("s", "yes")
        async with asyncio.timeout(WAIT):
            change = await anext(watch)
    assert change.context == {"ok": "yes"}


async def test_a_lock_service_error_is_passed_on_as_it_is() -> None:
    class Down(LocalLocker):
        async def acquire(self, key: str, ttl: float) -> Any:
            raise BackendUnavailable("etcd is down")

    manager = SessionManager(engine(PAYMENT), MemoryStore(), locker=Down())
    with pytest.raises(BackendUnavailable, match=r"^etcd is down$"):
        await manager.start("s")
    assert (await manager.list()).session_ids == []
