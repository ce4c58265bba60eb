"""Session watches fed by etcd (EtcdStateStore as a WatchableStore), on a real etcd:
a watch on one process sees the steps another process saved, in order, and the
deletion; it resumes from a revision; a compacted revision is refused with the
current state; an idle watch gets bookmarks that move with the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc  # type: ignore[import-untyped]
import pytest
import pytest_asyncio
from aetcd import rpc

from tests.sessions.flows import engine
from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.domain import SessionEvent
from trellis.errors import WatchRevisionCompacted
from trellis.sessions import SessionManager, SessionWatch

ECHO = [{"id": "start", "wait": True, "save_to": "last", "to": "start"}]
BOUND = 30


@pytest_asyncio.fixture
async def two_clients(etcd_server: EtcdCluster) -> AsyncIterator[list[EtcdClient]]:
    """Two etcd connections on one key prefix: two server processes' worth."""
    config = config_for(etcd_server)
    clients = [EtcdClient(config) for _ in range(2)]
    for client in clients:
        await client.connect()
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


def _managers(clients: list[EtcdClient], **store_options: float) -> list[SessionManager]:
    return [SessionManager(engine(ECHO), EtcdStateStore(c, **store_options)) for c in clients]


async def _take(watch: SessionWatch[SessionEvent], count: int) -> list[SessionEvent]:
    got: list[SessionEvent] = []
    async with asyncio.timeout(BOUND):
        while len(got) < count:
            got.append(await anext(watch))
    return got


async def test_a_watch_sees_the_steps_and_the_deletion_of_another_process(
    two_clients: list[EtcdClient],
) -> None:
    here, there = _managers(two_clients)
    started = await there.start("s")
    async with here.watch_events("s") as watch:
        (first,) = await _take(watch, 1)
        steps = [await there.navigate("s", str(n)) for n in range(20)]
        changes = await _take(watch, 20)
        await there.delete("s")
        async with asyncio.timeout(BOUND):
            rest = [event async for event in watch]
    assert first.bookmark and first.revision == started.state.revision
    assert [e.revision for e in changes] == [s.state.revision for s in steps]
    assert [e.diff.context for e in changes if e.diff] == [{"last": str(n)} for n in range(20)]
    assert [e.deleted for e in rest] == [True]
    assert rest[0].revision > steps[-1].state.revision
    assert here.watcher_count() == 0


async def test_a_resumed_watch_replays_from_the_revision_without_gap_or_duplicate(
    two_clients: list[EtcdClient],
) -> None:
    here, there = _managers(two_clients)
    await there.start("s")
    watch = here.watch_events("s")
    await _take(watch, 1)
    for n in range(5):
        await there.navigate("s", f"a{n}")
    seen = await _take(watch, 2)
    await watch.aclose()
    for n in range(5):
        await there.navigate("s", f"b{n}")  # saved while nobody watches
    async with there.watch_events("s", start_revision=seen[-1].revision + 1) as resumed:
        replayed = await _take(resumed, 8)
    contexts = [e.diff.context["last"] for e in seen + replayed if e.diff]
    assert contexts == [f"a{n}" for n in range(5)] + [f"b{n}" for n in range(5)]
    revisions = [e.revision for e in seen + replayed]
    assert revisions == sorted(set(revisions))


async def test_a_compacted_revision_is_refused_with_the_current_state(two_clients: list[EtcdClient]) -> None:
    here, there = _managers(two_clients)
    first = await there.start("s")
    for n in range(3):
        last = await there.navigate("s", str(n))
    await two_clients[0].call("Compact", rpc.CompactionRequest(revision=last.state.revision, physical=True))
    watch = here.watch_events("s", start_revision=first.state.revision + 1)
    with pytest.raises(WatchRevisionCompacted, match="get the session and watch again") as caught:
        await _take(watch, 1)
    assert caught.value.compact_revision == last.state.revision
    assert caught.value.current is not None
    assert caught.value.current.state.revision == last.state.revision
    assert caught.value.current.state.context["last"] == "2"
    # Starting over from the current state works.
    async with here.watch_events("s", start_revision=last.state.revision + 1) as again:
        await there.navigate("s", "after")
        (change,) = [e for e in await _take(again, 1)]
    assert change.diff is not None and change.diff.context == {"last": "after"}


async def test_an_idle_watch_gets_bookmarks_that_follow_the_store(two_clients: list[EtcdClient]) -> None:
    here, there = _managers(two_clients, bookmark_interval=0.2)
    started = await there.start("s")
    await there.start("other")
    async with here.watch_events("s") as watch:
        await _take(watch, 1)
        moved = await there.navigate("other", "x")  # the store's revision moves, not the session's
        async with asyncio.timeout(BOUND):
            while (event := await anext(watch)).revision < moved.state.revision:
                assert event.bookmark
    assert event.bookmark and event.revision >= moved.state.revision > started.state.revision


async def test_the_watch_stream_of_a_member_that_lost_its_leader_ends_instead_of_stalling(
    etcd_cluster3: EtcdCluster,
) -> None:
    # Connected to one member only; the other two die, so it has no leader (as a member
    # cut off from the quorum). Opened requiring a leader, its watch stream is ended by
    # etcd (the process' mux then reopens it elsewhere) rather than kept open, silent.
    alone = etcd_cluster3.members[0]
    async with EtcdClient(config_for(etcd_cluster3, endpoints=(alone.endpoint,))) as client:
        call = await client.watches.open_stream()
        create = rpc.WatchCreateRequest(key=b"/watched", start_revision=0)
        await call.write(rpc.WatchRequest(create_request=create))
        async with asyncio.timeout(BOUND):
            assert (await call.read()).created
        for member in etcd_cluster3.members[1:]:
            member.kill()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(BOUND):
                await call.read()
        call.cancel()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no leader" in (ended.value.details() or "")
