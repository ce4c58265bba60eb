"""Session watches fed by a real etcd (EtcdStateStore, a WatchableStore) at their edges:
they are counted while open, closing one leaves nothing of it running, and a watch that
the store ends (a compacted revision, a version it cannot read) says why and lets go."""

from __future__ import annotations

import asyncio

import pytest
from aetcd import rpc

from tests.sessions.flows import engine
from tests.support.waiting import eventually
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.domain import SessionEvent
from trellis.errors import TrellisError, WatchRevisionCompacted
from trellis.sessions import SessionManager, SessionWatch

ECHO = [{"id": "start", "wait": True, "save_to": "last", "to": "start"}]
BOUND = 30
# The tasks a watch fed by etcd runs: its relay and the store's event feed.
WATCH_TASKS = frozenset({"trellis-session-watch", "trellis-stream-feed"})


def _manager(client: EtcdClient) -> SessionManager:
    return SessionManager(engine(ECHO), EtcdStateStore(client))


async def _take(watch: SessionWatch[SessionEvent], count: int) -> list[SessionEvent]:
    got: list[SessionEvent] = []
    async with asyncio.timeout(BOUND):
        while len(got) < count:
            got.append(await anext(watch))
    return got


def _watch_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t.get_name() in WATCH_TASKS and not t.done()}


async def test_an_open_watch_is_counted_and_closing_it_leaves_nothing_running(
    etcd_client: EtcdClient,
) -> None:
    manager = _manager(etcd_client)
    await manager.start("s")
    before = _watch_tasks()
    watch = manager.watch_events("s")
    await _take(watch, 1)
    assert manager.watcher_count() == 1
    step = await manager.navigate("s", "x")
    (change,) = await _take(watch, 1)
    assert change.revision == step.state.revision
    await watch.aclose()
    assert manager.watcher_count() == 0
    # Closed means closed: no relay, no etcd watch feed of it still running.
    assert _watch_tasks() - before == set()


async def test_a_compacted_watch_lets_go_without_being_closed(etcd_client: EtcdClient) -> None:
    manager = _manager(etcd_client)
    first = await manager.start("s")
    for n in range(3):
        last = await manager.navigate("s", str(n))
    await etcd_client.call("Compact", rpc.CompactionRequest(revision=last.state.revision, physical=True))
    before = _watch_tasks()
    watch = manager.watch_events("s", start_revision=first.state.revision + 1)
    with pytest.raises(WatchRevisionCompacted) as caught:
        await _take(watch, 1)
    assert caught.value.start_revision == first.state.revision + 1
    # The reader stopped at the error and never closed the watch: it is let go anyway.
    await eventually(lambda: manager.watcher_count() == 0, "the ended watch is no longer counted")
    await eventually(lambda: not _watch_tasks() - before, "the ended watch's tasks are done")
    await watch.aclose()


async def test_a_version_the_store_cannot_read_ends_the_watch_with_the_error(etcd_client: EtcdClient) -> None:
    manager = _manager(etcd_client)
    await manager.start("s")
    watch = manager.watch_events("s")
    await _take(watch, 1)
    step = await manager.navigate("s", "fine")
    # Another writer puts something that is not a session where the session is kept.
    await etcd_client.call(
        "Put", rpc.PutRequest(key=etcd_client.config.key("sessions") + b"/s", value=b"not json")
    )
    got: list[SessionEvent] = []
    with pytest.raises(TrellisError, match="stored state is unreadable"):
        async with asyncio.timeout(BOUND):
            async for event in watch:
                got.append(event)
    assert [e.revision for e in got if not e.bookmark] == [step.state.revision]
    await eventually(lambda: manager.watcher_count() == 0, "the failed watch is no longer counted")
    await watch.aclose()
