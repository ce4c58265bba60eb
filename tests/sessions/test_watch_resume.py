"""Resumable session watches (watch_events) over the in-process store: revisions,
the first bookmark, resuming without gap or duplicate, and the compacted-revision
error when changes since the resume revision are not known."""

from __future__ import annotations

import asyncio

import pytest

from tests.sessions.flows import engine
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import SessionEvent
from trellis.errors import SessionNotFound, WatchRevisionCompacted
from trellis.sessions import SessionManager

ECHO = [{"id": "start", "wait": True, "save_to": "last", "to": "start"}]
BOUND = 10


async def _take(watch: object, count: int) -> list[SessionEvent]:
    got: list[SessionEvent] = []
    async with asyncio.timeout(BOUND):
        while len(got) < count:
            got.append(await anext(watch))  # type: ignore[call-overload]
    return got


async def test_events_start_with_a_bookmark_and_carry_the_revision_of_each_step() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    started = await manager.start("s")
    async with manager.watch_events("s") as watch:
        first = await _take(watch, 1)
        steps = [await manager.navigate("s", str(n)) for n in range(3)]
        changes = await _take(watch, 3)
    assert first == [SessionEvent(revision=started.state.revision)]
    assert first[0].bookmark
    assert [e.revision for e in changes] == [s.state.revision for s in steps]
    assert [e.diff.context for e in changes if e.diff] == [{"last": "0"}, {"last": "1"}, {"last": "2"}]
    assert [e.diff.revision for e in changes if e.diff] == [s.state.revision for s in steps]


async def test_a_resumed_watch_misses_and_repeats_nothing() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch_events("s")
    await _take(watch, 1)
    await manager.navigate("s", "a")
    (seen,) = await _take(watch, 1)
    await watch.aclose()
    # Resumed right after the last revision received: the next step is the first event.
    async with manager.watch_events("s", start_revision=seen.revision + 1) as resumed:
        await manager.navigate("s", "b")
        events = await _take(resumed, 2)
    changes = [e for e in events if e.diff is not None]
    assert [e.diff.context for e in changes if e.diff] == [{"last": "b"}]
    assert all(e.revision > seen.revision for e in events)


async def test_resuming_after_a_change_that_was_missed_is_refused_with_the_current_state() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    first = await manager.navigate("s", "a")
    await manager.navigate("s", "missed")  # nobody watched: this store keeps no history
    watch = manager.watch_events("s", start_revision=first.state.revision + 1)
    with pytest.raises(WatchRevisionCompacted, match="get the session and watch again") as caught:
        await _take(watch, 1)
    assert caught.value.start_revision == first.state.revision + 1
    assert caught.value.current is not None
    assert caught.value.current.state.context["last"] == "missed"
    assert manager.watcher_count() == 0


async def test_the_deletion_is_the_last_event() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    async with manager.watch_events("s") as watch:
        await _take(watch, 1)
        await manager.navigate("s", "x")
        await manager.delete("s")
        async with asyncio.timeout(BOUND):
            rest = [event async for event in watch]
    assert [e.deleted for e in rest] == [False, True]
    assert manager.watcher_count() == 0


async def test_watching_a_missing_session_fails_on_first_read() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    watch = manager.watch_events("ghost")
    with pytest.raises(SessionNotFound):
        await _take(watch, 1)
    assert manager.watcher_count() == 0


async def test_a_resumable_watcher_that_falls_behind_is_told_to_resume() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch_events("s")
    (bookmark,) = await _take(watch, 1)
    for n in range(300):
        await manager.navigate("s", str(n))
    got = []
    with pytest.raises(Exception, match="fell 256 events behind; resume it") as caught:
        async with asyncio.timeout(BOUND):
            async for event in watch:
                got.append(event)
    assert type(caught.value).__name__ == "BackendUnavailable"
    # What was queued is delivered in order before the error: the resume point is exact.
    assert [e.diff.context["last"] for e in got if e.diff] == [str(n) for n in range(256)]
    assert got[0].revision > bookmark.revision


@pytest.mark.parametrize("bad", [-1, "3"])
def test_a_bad_start_revision_is_refused(bad: object) -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    with pytest.raises(ValueError, match="start_revision must be 0"):
        manager.watch_events("s", start_revision=bad)  # type: ignore[arg-type]
