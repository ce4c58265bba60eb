"""Which path an etcd step takes, and what it costs in etcd calls: the step without the
lock retries once on a moved revision, then queues for the lock; a session that had to
queue goes straight to the lock for a while; refusals computed from the stored state are
reported at once. Every competing write is a real write by another replica."""

from __future__ import annotations

import time

import pytest

from tests.sessions.flows import chain, engine
from tests.support.etcd_counting import CountingInterceptor
from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import State, StepResult, ToolCall, ToolResult
from trellis.errors import InvalidInput
from trellis.ports.dispatcher import DispatchContext
from trellis.sessions import SessionManager
from trellis.step_deadline import step_deadline

TXN = "/etcdserverpb.KV/Txn"
RANGE = "/etcdserverpb.KV/Range"
FLOW = chain(8)


class OutrunStore(EtcdStateStore):
    """An etcd store whose next ``times`` commits without the lock are each preceded by
    a step of another replica on the same session, so each finds the revision moved."""

    def __init__(self, client: EtcdClient, rival: SessionManager) -> None:
        super().__init__(client)
        self.rival = rival
        self.times = 0

    async def save_if_unlocked(self, session_id: str, state: State) -> int:
        if self.times > 0:
            self.times -= 1
            await self.rival.navigate(session_id, f"rival {self.times}")
        return await super().save_if_unlocked(session_id, state)


def stored_inputs(result: StepResult) -> list[str]:
    context = result.state.context
    return [str(context[f"got_{i}"]) for i in range(len(context))]


async def test_a_moved_revision_is_retried_once_without_the_lock(etcd_server: EtcdCluster) -> None:
    config = config_for(etcd_server)
    counter = CountingInterceptor()
    async with EtcdClient(config, interceptors=[counter]) as mine, EtcdClient(config) as theirs:
        rival = SessionManager(engine(FLOW), EtcdStateStore(theirs))
        store = OutrunStore(mine, rival)
        manager = SessionManager(engine(FLOW), store)
        await manager.start("s")
        store.times = 1
        counter.methods.clear()
        result = await manager.navigate("s", "mine")
        # Refused (the rival moved the session), then committed on the state the refusal
        # carried: two transactions, no lock.
        assert counter.methods == [TXN, TXN]
        assert stored_inputs(result) == ["rival 0", "mine"]
        # Not contended (never queued): the next step goes without the lock again.
        counter.methods.clear()
        await manager.navigate("s", "again")
        assert counter.methods == [TXN]


async def test_two_refusals_in_a_row_send_the_step_to_the_lock(etcd_server: EtcdCluster) -> None:
    config = config_for(etcd_server)
    counter = CountingInterceptor()
    async with EtcdClient(config, interceptors=[counter]) as mine, EtcdClient(config) as theirs:
        rival = SessionManager(engine(FLOW), EtcdStateStore(theirs))
        store = OutrunStore(mine, rival)
        manager = SessionManager(engine(FLOW), store, contended_for=3600.0)
        await manager.start("s")
        store.times = 2
        await mine.lease(30)  # granted once per process, not per step
        counter.methods.clear()
        result = await manager.navigate("s", "mine")
        # Two refused commits, then lock+load and save+unlock.
        assert counter.methods == [TXN, TXN, TXN, TXN]
        assert stored_inputs(result) == ["rival 1", "rival 0", "mine"]
        # The session is now known as contended: its next step takes the lock directly.
        counter.methods.clear()
        result = await manager.navigate("s", "next")
        assert counter.methods == [TXN, TXN]
        assert stored_inputs(result)[-1] == "next"


async def test_a_contended_session_is_forgotten_when_its_time_is_up(etcd_server: EtcdCluster) -> None:
    config = config_for(etcd_server)
    counter = CountingInterceptor()
    async with EtcdClient(config, interceptors=[counter]) as mine, EtcdClient(config) as theirs:
        rival = SessionManager(engine(FLOW), EtcdStateStore(theirs))
        store = OutrunStore(mine, rival)
        manager = SessionManager(engine(FLOW), store, contended_for=0.0)
        await manager.start("s")
        store.times = 2
        await manager.navigate("s", "contended")
        counter.methods.clear()
        await manager.navigate("s", "free again")
        assert counter.methods == [TXN]


async def test_start_of_an_existing_session_reads_it_and_signal_uses_the_cache(
    etcd_server: EtcdCluster,
) -> None:
    config = config_for(etcd_server)
    counter = CountingInterceptor()
    flow = [{**node, "on_signal": {"skip": node["to"]}} if "to" in node else node for node in FLOW]
    async with EtcdClient(config, interceptors=[counter]) as mine, EtcdClient(config) as theirs:
        manager = SessionManager(engine(flow), EtcdStateStore(mine))
        other = SessionManager(engine(flow), EtcdStateStore(theirs))
        await manager.start("s")
        await other.navigate("s", "elsewhere")  # the manager's cached view is now stale
        counter.methods.clear()
        again = await manager.start("s")
        # An existing session comes back as stored: one read, no write, no lock.
        assert counter.methods == [RANGE]
        assert again.state.current_node_id == "c1" and stored_inputs(again) == ["elsewhere"]
        counter.methods.clear()
        step = await manager.signal("s", "skip")
        assert counter.methods == [TXN]  # from the cache just refreshed by the read
        assert step.state.current_node_id == "c2"


async def test_a_refusal_of_the_stored_state_is_reported_without_taking_the_lock(
    etcd_server: EtcdCluster,
) -> None:
    def refuse_secrets(step: StepResult) -> None:
        if "secret" in str(step.state.context.values()):
            raise InvalidInput("the reply would show a secret")

    config = config_for(etcd_server)
    counter = CountingInterceptor()
    async with EtcdClient(config, interceptors=[counter]) as mine, EtcdClient(config) as theirs:
        creator = SessionManager(engine(FLOW), EtcdStateStore(theirs))
        await creator.start("s")  # never seen by the manager below: nothing cached
        manager = SessionManager(engine(FLOW), EtcdStateStore(mine), check_step=refuse_secrets)
        with pytest.raises(InvalidInput, match="secret"):
            await manager.navigate("s", "secret")
        assert counter.methods == [RANGE]  # read, judged, refused: no write, no lock
        assert (await creator.get("s")).state.context == {}
        # A refusal judged on a cached (maybe stale) view is decided under the lock.
        counter.methods.clear()
        await manager.navigate("s", "fine")
        with pytest.raises(InvalidInput, match="secret"):
            await manager.navigate("s", "secret")
        assert (await creator.get("s")).state.context == {"got_0": "fine"}


def test_a_locker_and_a_step_store_are_not_both_accepted() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError, match="not both"):
        SessionManager(engine(FLOW), store, locker=LocalLocker(), step_store=store)  # type: ignore[arg-type]


async def test_a_tool_call_carries_the_steps_deadline_as_wall_clock_time() -> None:
    seen: list[DispatchContext | None] = []

    class Recorder:
        """A dispatcher that serves one tool and keeps the context of each call."""

        def serves(self, tool_name: str) -> bool:
            return tool_name == "probe"

        async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
            seen.append(context)
            return ToolResult(id=call.id, result="done")

    flow = [
        {"id": "start", "content": "go?", "wait": True, "to": "call"},
        {"id": "call", "do": {"name": "probe"}, "save_to": "out", "to": "end"},
        {"id": "end", "content": "{{ .out }}", "wait": True},
    ]
    manager = SessionManager(engine(flow), MemoryStore(), dispatcher=Recorder())
    await manager.start("with")
    before = time.time()
    with step_deadline(300.0):
        await manager.navigate("with", "go")
    await manager.start("without")
    await manager.navigate("without", "go")
    with_deadline, without = seen
    assert with_deadline is not None and without is not None
    assert with_deadline.deadline is not None
    # 300 s from when the step began, in wall-clock seconds (not loop or monotonic time).
    assert before + 200 < with_deadline.deadline <= time.time() + 300
    assert without.deadline is None
