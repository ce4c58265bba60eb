"""The SDK's session watch through a real server (memory store): revisions, the first
bookmark, the deletion, resuming, and the compacted-revision error with the current
state. Across replicas and server kills: tests/replication."""

from __future__ import annotations

import asyncio

import pytest

from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.clients import Client
from trellis.domain import SessionEvent
from trellis.errors import InvalidInput, WatchRevisionCompacted

BOUND = 30.0


async def test_events_carry_revisions_from_a_first_bookmark_to_the_deletion(quiz_target: str) -> None:
    async with Client(quiz_target) as client:
        started = await client.sessions.start("w")
        events: list[SessionEvent] = []
        async with asyncio.timeout(BOUND):
            watch = client.sessions.watch_events("w")
            events.append(await anext(watch))
            step = await client.sessions.navigate("w", "Wu")
            events.append(await anext(watch))
            await client.sessions.delete("w")
            events.extend([event async for event in watch])
    assert events[0].bookmark and events[0].revision == started.state.revision
    assert events[1].diff is not None and events[1].diff.context == {"name": "Wu"}
    assert events[1].revision == events[1].diff.revision == step.state.revision
    assert [e.deleted for e in events[2:]] == [True]


async def test_a_watch_resumed_after_its_last_revision_sees_only_what_follows(quiz_target: str) -> None:
    async with Client(quiz_target) as client:
        started = await client.sessions.start("r")
        async with asyncio.timeout(BOUND):
            watch = client.sessions.watch("r", start_revision=started.state.revision + 1)
            pending = asyncio.ensure_future(anext(watch))
            step = await client.sessions.navigate("r", "Ru")
            change = await pending
            await watch.aclose()
    assert change.context == {"name": "Ru"} and change.revision == step.state.revision


async def test_resuming_past_a_missed_change_raises_compacted_with_the_state(quiz_target: str) -> None:
    async with Client(quiz_target) as client:
        started = await client.sessions.start("m")
        await client.sessions.navigate("m", "Mo")  # not watched: a memory store keeps no history
        with pytest.raises(WatchRevisionCompacted) as caught:
            async with asyncio.timeout(BOUND):
                async for _ in client.sessions.watch("m", start_revision=started.state.revision + 1):
                    pass
    assert caught.value.start_revision == started.state.revision + 1
    assert caught.value.current is not None
    assert caught.value.current.state.context["name"] == "Mo"


async def test_a_negative_start_revision_is_refused_by_the_server(quiz_target: str) -> None:
    async with Client(quiz_target) as client:
        await client.sessions.start("n")
        stub = sessions_pb2_grpc.SessionsStub(client.channel.channel)
        call = stub.Watch(spb.SessionsWatchRequest(session_id="n", start_revision=-1))
        with pytest.raises(Exception) as caught:
            async with asyncio.timeout(BOUND):
                async for _ in call:
                    pass
        assert isinstance(client.channel.error(caught.value), InvalidInput)  # type: ignore[arg-type]
        assert "start_revision: must be 0" in str(caught.value)
