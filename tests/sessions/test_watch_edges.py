"""Session watches over the in-process store at their edges: steps saved before the
first read (the creation, a deletion, the resume revision they are checked against),
the fields of WatchRevisionCompacted, the 256-event bound before and after the first
read, and the lines an operator sees when a watcher drops events."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.sessions.flows import engine
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import SessionEvent
from trellis.errors import BackendUnavailable, WatchRevisionCompacted
from trellis.sessions import SessionManager, SessionWatch

ECHO = [{"id": "start", "wait": True, "save_to": "last", "to": "start"}]
BOUND = 10
QUEUE = 256  # the documented bound: "falls more than 256 events behind"
LOGGER = "trellis.sessions"


async def _take(watch: SessionWatch[SessionEvent], count: int) -> list[SessionEvent]:
    got: list[SessionEvent] = []
    async with asyncio.timeout(BOUND):
        while len(got) < count:
            got.append(await anext(watch))
    return got


def _lasts(events: list[SessionEvent]) -> list[object]:
    return [e.diff.context.get("last") for e in events if e.diff is not None]


async def test_a_watch_opened_before_the_session_exists_sees_its_creation() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    # From revision 1: every change, the creation included.
    async with manager.watch_events("s", start_revision=1) as watch:
        started = await manager.start("s")
        creation, bookmark = await _take(watch, 2)
    assert creation.diff is not None and creation.revision == started.state.revision
    assert creation.diff.current_node_id == "start"
    assert bookmark.bookmark and bookmark.revision == started.state.revision


async def test_steps_saved_before_the_first_read_are_all_delivered_from_the_resume_revision() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    started = await manager.start("s")
    watch = manager.watch_events("s", start_revision=started.state.revision + 1)
    steps = [await manager.navigate("s", name) for name in ("a", "b")]  # before the first read
    async with watch:
        events = await _take(watch, 3)
    assert _lasts(events) == ["a", "b"]
    revisions = [step.state.revision for step in steps]
    assert [e.revision for e in events] == [*revisions, revisions[-1]]
    assert events[2].bookmark


async def test_resuming_at_the_revision_read_refuses_when_its_change_is_unknown() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    known = await manager.start("s")
    # start_revision = the current revision: the change that made it was never seen here,
    # even though the step below is offered to the watch before its first read.
    watch = manager.watch_events("s", start_revision=known.state.revision)
    after = await manager.navigate("s", "later")
    with pytest.raises(WatchRevisionCompacted) as caught:
        await _take(watch, 1)
    assert caught.value.start_revision == known.state.revision
    assert caught.value.compact_revision == known.state.revision + 1
    assert caught.value.current is not None
    assert caught.value.current.state.revision == after.state.revision
    assert manager.watcher_count() == 0


async def test_a_refused_resume_names_the_first_revision_still_known() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    first = await manager.navigate("s", "a")
    now = await manager.navigate("s", "missed")  # nobody watched: this store keeps no history
    watch = manager.watch_events("s", start_revision=first.state.revision + 1)
    with pytest.raises(WatchRevisionCompacted) as caught:
        await _take(watch, 1)
    # Everything up to the revision read is gone: the history starts after it.
    assert caught.value.compact_revision == now.state.revision + 1
    assert f"before revision {now.state.revision + 1} is no longer kept" in str(caught.value)
    assert f"cannot watch from revision {first.state.revision + 1}," in str(caught.value)


async def test_a_watch_resumed_from_a_revision_not_yet_reached_skips_the_changes_before_it() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    started = await manager.start("s")
    # The client asks for the third step on; the first two are offered before its first read.
    third = started.state.revision + 3
    watch = manager.watch_events("s", start_revision=third)
    steps = [await manager.navigate("s", str(n)) for n in range(3)]
    assert steps[2].state.revision == third
    async with watch:
        events = await _take(watch, 2)
    assert _lasts(events) == ["2"]
    assert events[0].revision == third
    assert events[1].bookmark and events[1].revision == third


async def test_the_first_bookmark_of_a_resumed_watch_is_the_revision_it_starts_after() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    started = await manager.start("s")
    async with manager.watch_events("s", start_revision=started.state.revision + 1) as watch:
        (first,) = await _take(watch, 1)
        step = await manager.navigate("s", "x")
        (change,) = await _take(watch, 1)
    assert first.bookmark and first.revision == started.state.revision
    assert change.revision == step.state.revision and _lasts([change]) == ["x"]


async def test_a_deletion_before_the_first_read_ends_the_stream_after_the_earlier_steps() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch_events("s")
    await manager.navigate("s", "x")
    await manager.delete("s")
    assert manager.watcher_count() == 0  # the deletion ended it at once
    async with asyncio.timeout(BOUND):
        events = [event async for event in watch]
    assert _lasts(events) == ["x"]
    assert [e.deleted for e in events] == [False, True]


async def test_a_resumable_watcher_more_than_256_steps_behind_before_reading_is_dropped_at_once() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch_events("s")
    for n in range(QUEUE):
        await manager.navigate("s", str(n))
    assert manager.watcher_count() == 1  # 256 unread steps are still kept
    await manager.navigate("s", "one too many")
    assert manager.watcher_count() == 0  # not kept until it reads: let go with the 257th
    with pytest.raises(BackendUnavailable, match="fell 256 events behind; resume it"):
        await _take(watch, 1)


async def test_a_resumable_watcher_that_falls_behind_is_unsubscribed() -> None:
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch_events("s")
    await _take(watch, 1)
    for n in range(QUEUE + 1):
        await manager.navigate("s", str(n))
    assert manager.watcher_count() == 0
    with pytest.raises(BackendUnavailable):
        await _take(watch, QUEUE + 1)


@pytest.mark.parametrize("steps", [QUEUE + 1, QUEUE + 44])
async def test_a_watcher_that_drops_events_is_logged_once_and_its_count_when_closed(
    steps: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    watch = manager.watch("s")
    for n in range(steps):
        await manager.navigate("s", str(n))
    slow = [r for r in caplog.records if "is too slow: events are being dropped" in r.getMessage()]
    # Told as soon as the first event is dropped, and once only.
    assert [(r.levelno, r.getMessage()) for r in slow] == [
        (logging.WARNING, "watcher of session 's' is too slow: events are being dropped")
    ]
    async with asyncio.timeout(BOUND):
        kept = [await anext(watch) for _ in range(QUEUE)]
    assert [d.context["last"] for d in kept] == [str(n) for n in range(QUEUE)]  # the oldest are kept
    await watch.aclose()
    await watch.aclose()  # closing again reports nothing more
    closed = [r.getMessage() for r in caplog.records if "closed after" in r.getMessage()]
    assert closed == [f"watcher of session 's' closed after {steps - QUEUE} dropped events"]


async def test_a_watcher_that_drops_nothing_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    manager = SessionManager(engine(ECHO), MemoryStore())
    await manager.start("s")
    async with manager.watch("s") as watch:
        await manager.navigate("s", "x")
        async with asyncio.timeout(BOUND):
            change = await anext(watch)
    assert change.context == {"last": "x"}
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == []
