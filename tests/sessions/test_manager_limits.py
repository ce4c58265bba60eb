"""The session manager's settings and documented bounds, at their edges: automatic
moves per step, how far a watcher may fall behind, the input limit, which lock
service it uses, where it logs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.sessions.flows import LOOP, LockingMemoryStore, engine
from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import State, StateDiff
from trellis.errors import ExecutionViolation, InvalidInput, InvalidSessionId, SessionNotFound
from trellis.ports.locker import LockHandle
from trellis.sessions import SessionManager

# Waits at "start"; each input saves it and comes back: one committed change per step.
ECHO = [{"id": "start", "wait": True, "save_to": "last", "to": "start"}]


@pytest.mark.parametrize("bad", [0, -1])
def test_max_auto_steps_below_one_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match=f"max_auto_steps must be at least 1, got {bad}"):
        SessionManager(engine(LOOP), MemoryStore(), max_auto_steps=bad)


async def test_one_automatic_step_is_allowed() -> None:
    flow = [{"id": "start", "content": "hi", "to": "ask"}, {"id": "ask", "wait": True, "to": "ask"}]
    manager = SessionManager(engine(flow), MemoryStore(), max_auto_steps=1)
    result = await manager.start("s")
    assert result.state.current_node_id == "ask"


async def test_by_default_a_step_stops_after_1000_automatic_moves() -> None:
    manager = SessionManager(engine(LOOP), MemoryStore())
    with pytest.raises(ExecutionViolation, match="still moving after 1000 automatic steps"):
        await manager.start("s")
    with pytest.raises(SessionNotFound):
        await manager.get("s")


async def test_a_watcher_that_falls_behind_keeps_the_first_256_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch("s")
    for n in range(260):
        await manager.navigate("s", str(n))
    dropped = [r.getMessage() for r in caplog.records]
    # Four events dropped, one warning for the watcher (not one per event: issue 8's amplification).
    assert dropped == ["watcher of session 's' is too slow: events are being dropped"]
    await watch.aclose()  # what was queued can still be read
    changes: list[StateDiff] = []
    async with asyncio.timeout(10):
        async for change in watch:
            changes.append(change)
    assert len(changes) == 256
    assert [c.context["last"] for c in changes] == [str(n) for n in range(256)]


async def test_a_watcher_that_fell_behind_still_sees_the_end_on_delete() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch("s")
    for n in range(256):
        await manager.navigate("s", str(n))
    await manager.delete("s")  # the end marker needs no room: no queued change is dropped for it
    assert manager.watcher_count() == 0  # unsubscribed at once, not when read
    changes: list[StateDiff] = []
    async with asyncio.timeout(10):
        async for change in watch:
            changes.append(change)
    assert [c.context["last"] for c in changes] == [str(n) for n in range(256)]
    assert manager.watcher_count() == 0


async def test_without_input_limit_the_environment_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRELLIS_MAX_INPUT_SIZE", "8")
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    assert (await manager.navigate("s", "x" * 8)).state.context["last"] == "x" * 8
    with pytest.raises(InvalidInput, match="exceeds maximum allowed size"):
        await manager.navigate("s", "x" * 9)


async def test_a_store_that_locks_is_not_used_as_the_lock_when_a_locker_is_given() -> None:
    store = LockingMemoryStore()
    manager = SessionManager(engine(ECHO), store, locker=LocalLocker())
    await manager.start("s")
    await manager.navigate("s", "hi")
    assert store.step_calls == 0  # the locker took the locks
    plain = SessionManager(engine(ECHO), store)
    await plain.navigate("s", "again")
    assert store.step_calls == 1


async def test_warnings_go_to_the_logger_given(caplog: pytest.LogCaptureFixture) -> None:
    class FailingUnlock(LocalLocker):
        async def acquire(self, key: str, ttl: float) -> LockHandle:
            handle = await super().acquire(key, ttl)

            class Handle:
                key = handle.key
                token = handle.token

                def held(self) -> bool:
                    return handle.held()

                async def unlock(self) -> None:
                    await handle.unlock()
                    raise ConnectionError("reset")

            return Handle()  # type: ignore[return-value]

    manager = SessionManager(
        engine(ECHO), MemoryStore(), locker=FailingUnlock(), logger=logging.getLogger("mine")
    )
    await manager.start("s")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("mine", "failed to release the lock of session 's': reset")
    ]


async def test_a_closed_watch_ends_its_stream_at_once() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch("s")
    watch.close()
    await manager.navigate("s", "after")  # not seen: the watch is closed
    async with asyncio.timeout(10):
        assert [change async for change in watch] == []
    assert manager.watcher_count() == 0


async def test_aclose_wakes_a_reader_that_is_waiting() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch("s")

    async def read_all() -> list[StateDiff]:
        return [change async for change in watch]

    reader = asyncio.create_task(read_all())
    await asyncio.sleep(0)  # the reader now waits for a change
    await watch.aclose()
    async with asyncio.timeout(10):
        assert await reader == []


@pytest.mark.parametrize("bad", ["", None, 7])
async def test_an_invalid_session_id_is_refused_before_the_store_is_asked(bad: object) -> None:
    class CountingStore(MemoryStore):
        calls = 0

        async def load(self, session_id: str) -> State:
            CountingStore.calls += 1
            return await super().load(session_id)

        async def delete(self, session_id: str) -> None:
            CountingStore.calls += 1
            await super().delete(session_id)

    manager = SessionManager(engine(ECHO), CountingStore())
    for call in (manager.start, manager.get, manager.delete):
        with pytest.raises(InvalidSessionId, match="session ID cannot be empty"):
            await call(bad)  # type: ignore[operator]
    with pytest.raises(InvalidSessionId, match="session ID cannot be empty"):
        manager.watch(bad)  # type: ignore[arg-type]
    assert CountingStore.calls == 0
    assert manager.watcher_count() == 0


async def test_deleting_a_session_wakes_a_reader_that_is_waiting() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch("s")

    async def read_all() -> list[StateDiff]:
        return [change async for change in watch]

    reader = asyncio.create_task(read_all())
    await asyncio.sleep(0)  # the reader now waits for a change
    await manager.delete("s")
    async with asyncio.timeout(10):
        assert await reader == []


async def test_closing_one_watch_leaves_the_others_of_the_session_watching() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    first, second = manager.watch("s"), manager.watch("s")
    first.close()
    await manager.navigate("s", "hi")
    async with asyncio.timeout(10):
        change = await anext(second)
    assert change.context["last"] == "hi"
    await second.aclose()
    assert manager.watcher_count() == 0
