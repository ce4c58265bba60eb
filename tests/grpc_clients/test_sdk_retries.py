"""The Python SDK retries steps safely: each carries a request ID, so a reply lost to a
broken connection or to the call's deadline is retried and the step applied once.
A real server (in process) reached through a TCP proxy that holds its replies back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.servers import Served, serving
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.api.transport import ChannelOptions
from trellis.clients import Client
from trellis.errors import InvalidInput, RequestIdReused, RevisionMismatch

FLOW = [
    {"id": "start", "content": "first?", "wait": True, "save_to": "first", "to": "second"},
    {"id": "second", "content": "second?", "wait": True, "save_to": "second", "to": "end"},
    {"id": "end", "content": "bye", "wait": True},
]


@pytest.fixture
async def behind_proxy() -> AsyncIterator[tuple[Served, MemoryStore, TcpProxy]]:
    store = MemoryStore()
    async with serving(loader=MemoryLoader(FLOW), store=store) as served:
        proxy = TcpProxy("127.0.0.1", served.server.port)
        await proxy.start()
        try:
            yield served, store, proxy
        finally:
            await proxy.cut()


def _options(timeout: float) -> ChannelOptions:
    return ChannelOptions(timeout=timeout, retries=6, backoff_base=0.02, backoff_cap=0.2)


async def _moved(store: MemoryStore, revision: int) -> bool:
    return (await store.load("s")).revision > revision


def _navigates(served: Served) -> float:
    value = served.server.observer.registry.get_sample_value(
        "trellis_steps_total", {"service": "Sessions", "method": "Navigate", "outcome": "ok"}
    )
    return value or 0.0


async def test_a_reply_lost_to_a_broken_connection_is_retried_and_applied_once(
    step_stream: bool,
    behind_proxy: tuple[Served, MemoryStore, TcpProxy],
) -> None:
    _served, store, proxy = behind_proxy
    async with Client(proxy.endpoint, options=_options(timeout=30.0), step_stream=step_stream) as client:
        started = await client.sessions.start("s")
        assert started.created
        proxy.hold()
        step = asyncio.ensure_future(client.sessions.navigate("s", "once"))
        await eventually(lambda: _moved(store, started.state.revision), "the step was stored")
        await eventually(lambda: proxy.held_bytes > 0, "the reply reached the proxy")
        proxy.drop_held()
        async with asyncio.timeout(60):
            result = await step
    assert result.replayed and result.state.history == ["start", "second"]
    stored = await store.load("s")
    assert stored.history == ["start", "second"] and stored.context == {"first": "once"}


async def test_a_reply_lost_to_the_deadline_is_retried_and_applied_once(
    step_stream: bool,
    behind_proxy: tuple[Served, MemoryStore, TcpProxy],
) -> None:
    served, store, proxy = behind_proxy
    async with Client(proxy.endpoint, options=_options(timeout=2.0), step_stream=step_stream) as client:
        started = await client.sessions.start("s")
        proxy.hold()
        step = asyncio.ensure_future(client.sessions.navigate("s", "once"))
        await eventually(lambda: _moved(store, started.state.revision), "the step was stored")
        # The first attempt's deadline passes with its reply held; the retry reaches the
        # server (a second Navigate served), and only then do the replies go through.
        await eventually(lambda: _navigates(served) >= 2, "the retry reached the server", within=60)
        proxy.release()
        async with asyncio.timeout(60):
            result = await step
    assert result.replayed
    stored = await store.load("s")
    assert stored.history == ["start", "second"] and stored.context == {"first": "once"}


async def test_expected_revision_and_request_ids_through_the_sdk(
    step_stream: bool,
    behind_proxy: tuple[Served, MemoryStore, TcpProxy],
) -> None:
    _served, _store, proxy = behind_proxy
    async with Client(proxy.endpoint, step_stream=step_stream) as client:
        started = await client.sessions.start("s", request_id="start-1")
        again = await client.sessions.start("s", request_id="start-1")
        other = await client.sessions.start("s")
        assert (started.created, again.created, again.replayed, other.created) == (True, True, True, False)
        moved = await client.sessions.navigate("s", "a", expected_revision=started.state.revision)
        with pytest.raises(RevisionMismatch) as caught:
            await client.sessions.signal("s", "interrupt", expected_revision=started.state.revision)
        assert (caught.value.expected_revision, caught.value.actual_revision) == (
            started.state.revision,
            moved.state.revision,
        )
        with pytest.raises(InvalidInput, match="request_id"):
            await client.sessions.navigate("s", "b", request_id="no spaces")
        with pytest.raises(RequestIdReused, match="already used"):
            await client.sessions.navigate("s", "other", request_id="start-1")
        assert (await client.sessions.get("s")).state.revision == moved.state.revision


async def test_of_simultaneous_starts_through_the_server_exactly_one_is_created(
    step_stream: bool,
    behind_proxy: tuple[Served, MemoryStore, TcpProxy],
) -> None:
    served, _store, _proxy = behind_proxy
    async with (
        Client(served.target, step_stream=step_stream) as one,
        Client(served.target, step_stream=step_stream) as two,
    ):
        for n in range(5):
            results = await asyncio.gather(
                *(c.sessions.start(f"race-{n}") for c in (one, two) for _ in range(4))
            )
            assert sum(result.created for result in results) == 1
