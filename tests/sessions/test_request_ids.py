"""Safe retries on every store: a step repeated with its request ID is applied once,
``expected_revision`` refuses a step on another revision, and of simultaneous starts
of one session exactly one reports ``created``.

Each test runs on the memory store, the file store and a real etcd; "two replicas"
are two session managers over the same stored sessions (for etcd: two connections,
as two server processes have)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio

from tests.sessions.flows import chain, engine
from tests.support.etcd_counting import CountingInterceptor
from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.adapters.file_store import FileStore
from trellis.adapters.memory_store import MemoryStore
from trellis.errors import InvalidInput, RequestIdReused, RevisionMismatch
from trellis.ports.store import StateStore
from trellis.request_ids import MAX_REQUEST_ID_LENGTH, RECENT_REQUESTS
from trellis.sessions import SessionManager

Replicas = Callable[[], SessionManager]


@pytest_asyncio.fixture(
    params=["memory", "file", pytest.param("etcd", marks=pytest.mark.etcd)],
)
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Replicas]:
    """Makes session managers ("replicas") that share one store's sessions."""
    flow = engine(chain(40))
    async with AsyncExitStack() as stack:
        if request.param == "etcd":
            cluster: EtcdCluster = request.getfixturevalue("etcd_server")
            config = config_for(cluster)
            clients = [await stack.enter_async_context(EtcdClient(config)) for _ in range(2)]
            made = 0

            def on_etcd() -> SessionManager:
                nonlocal made
                made += 1
                return SessionManager(flow, EtcdStateStore(clients[made % 2]))

            yield on_etcd
            return
        shared: StateStore = MemoryStore() if request.param == "memory" else FileStore(tmp_path / "sessions")
        yield lambda: SessionManager(flow, shared)


async def test_a_repeated_navigate_is_applied_once_and_answered_as_replayed(replicas: Replicas) -> None:
    one, two = replicas(), replicas()
    await one.start("s")
    first = await one.navigate("s", "a", request_id="req-1")
    assert not first.replayed and first.state.current_node_id == "c1"
    # The retry reaches another replica (the first one's answer was lost).
    again = await two.navigate("s", "a", request_id="req-1")
    assert again.replayed and not again.created
    assert again.state.revision == first.state.revision
    assert again.state.history == first.state.history == ["c0", "c1"]
    stored = await two.get("s")
    assert stored.state.history == ["c0", "c1"] and stored.state.context == {"got_0": "a"}


async def test_a_repeated_signal_is_applied_once(replicas: Replicas) -> None:
    manager = replicas()
    await manager.start("s")
    await manager.navigate("s", "a", request_id="n-1")
    # An unhandled signal is refused every time: nothing is recorded for it.
    for _ in range(2):
        with pytest.raises(Exception, match="nope"):
            await manager.signal("s", "nope", request_id="sig-1")
    after = await manager.get("s")
    assert [r.id for r in after.state.requests] == ["n-1"]


async def test_a_retry_after_other_steps_is_still_not_applied_again(replicas: Replicas) -> None:
    one, two = replicas(), replicas()
    await one.start("s")
    await one.navigate("s", "a", request_id="r-a")
    await two.navigate("s", "b", request_id="r-b")
    late = await one.navigate("s", "a", request_id="r-a")
    assert late.replayed and late.state.history == ["c0", "c1", "c2"]
    assert (await two.get("s")).state.context == {"got_0": "a", "got_1": "b"}


async def test_the_same_id_with_another_request_is_refused_and_changes_nothing(replicas: Replicas) -> None:
    manager = replicas()
    await manager.start("s")
    applied = await manager.navigate("s", "a", request_id="r-1")
    with pytest.raises(RequestIdReused, match="r-1") as caught:
        await manager.navigate("s", "b", request_id="r-1")
    assert (caught.value.session_id, caught.value.request_id) == ("s", "r-1")
    with pytest.raises(RequestIdReused):
        await manager.signal("s", "interrupt", request_id="r-1")
    assert (await manager.get("s")).state.revision == applied.state.revision


@pytest.mark.parametrize(
    ("request_id", "problem"),
    [("x" * (MAX_REQUEST_ID_LENGTH + 1), "at most 64"), ("a b", "' '"), ("é", "'é'"), ("a/b", "'/'")],
)
async def test_a_malformed_request_id_is_invalid_input(
    replicas: Replicas, request_id: str, problem: str
) -> None:
    manager = replicas()
    await manager.start("s")
    with pytest.raises(InvalidInput, match=f"request_id: .*{problem}"):
        await manager.navigate("s", "a", request_id=request_id)
    assert (await manager.get("s")).state.history == ["c0"]


async def test_a_session_remembers_its_last_ids_only(replicas: Replicas) -> None:
    manager = replicas()
    await manager.start("s", request_id="start-1")
    steps = RECENT_REQUESTS + 3
    for n in range(steps):
        await manager.navigate("s", f"in {n}", request_id=f"r-{n}")
    kept = (await manager.get("s")).state.requests
    assert [r.id for r in kept] == [f"r-{n}" for n in range(3, steps)]
    # Still remembered: not applied again. Forgotten: a new step (the documented bound).
    assert (await manager.navigate("s", f"in {steps - 1}", request_id=f"r-{steps - 1}")).replayed
    forgotten = await manager.navigate("s", "in 0", request_id="r-0")
    assert not forgotten.replayed and len(forgotten.state.history) == steps + 2


async def test_expected_revision_applies_on_that_revision_only(replicas: Replicas) -> None:
    one, two = replicas(), replicas()
    started = await one.start("s")
    moved = await one.navigate("s", "a", expected_revision=started.state.revision)
    assert moved.state.current_node_id == "c1"
    with pytest.raises(RevisionMismatch) as caught:
        await two.navigate("s", "b", expected_revision=started.state.revision)
    refused = caught.value
    assert (refused.session_id, refused.expected_revision, refused.actual_revision) == (
        "s",
        started.state.revision,
        moved.state.revision,
    )
    with pytest.raises(RevisionMismatch):
        await two.signal("s", "interrupt", expected_revision=started.state.revision)
    assert (await two.get("s")).state.revision == moved.state.revision


async def test_a_retry_with_a_stale_expected_revision_is_answered_not_refused(replicas: Replicas) -> None:
    """The first attempt was applied (its answer lost): the revision moved because of it,
    and the retry must say so instead of reporting a conflict."""
    one, two = replicas(), replicas()
    started = await one.start("s")
    revision = started.state.revision
    first = await one.navigate("s", "a", request_id="r-1", expected_revision=revision)
    retried = await two.navigate("s", "a", request_id="r-1", expected_revision=revision)
    assert retried.replayed and retried.state.revision == first.state.revision


async def test_a_repeated_start_that_created_the_session_says_created_again(replicas: Replicas) -> None:
    one, two = replicas(), replicas()
    first = await one.start("s", {"who": "ada"}, request_id="start-1")
    assert first.created and not first.replayed
    again = await two.start("s", {"who": "ada"}, request_id="start-1")
    assert again.created and again.replayed
    other = await two.start("s", request_id="start-2")
    assert not other.created and not other.replayed


async def test_of_simultaneous_creators_exactly_one_is_told_created(replicas: Replicas) -> None:
    managers = [replicas() for _ in range(4)]
    for round_ in range(5):
        session = f"race-{round_}"
        results = await asyncio.gather(*(m.start(session) for m in managers for _ in range(2)))
        assert sum(result.created for result in results) == 1, [r.created for r in results]
        revisions = {result.state.revision for result in results}
        assert len(revisions) == 1  # everyone sees the one session that was created


@pytest.mark.etcd
async def test_an_identified_step_on_etcd_is_still_one_transaction(etcd_server: EtcdCluster) -> None:
    """The request ID is stored in the step's own write: no read or write more."""
    counter = CountingInterceptor()
    async with EtcdClient(config_for(etcd_server), interceptors=[counter]) as client:
        manager = SessionManager(engine(chain(5)), EtcdStateStore(client))
        await manager.start("s")
        for n in range(3):
            counter.methods.clear()
            result = await manager.navigate(
                "s",
                f"input {n}",
                request_id=f"r-{n}",
                expected_revision=(await manager.get("s")).state.revision,
            )
            assert counter.methods == ["/etcdserverpb.KV/Range", "/etcdserverpb.KV/Txn"]  # get, then the step
            assert [r.id for r in result.state.requests][-1] == f"r-{n}"
        counter.methods.clear()
        replayed = await manager.navigate("s", "input 2", request_id="r-2")
        # A repeat writes nothing: one read tells it was applied.
        assert replayed.replayed and not replayed.created and counter.methods == ["/etcdserverpb.KV/Range"]
