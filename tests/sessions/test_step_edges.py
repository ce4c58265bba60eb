"""Edges of a session step a caller sees: what a step reports (created, replayed), the
bounds of ``expected_revision``, what a timer's firing returns, a hook that fails after
the save, a watch of a session that never existed, and on a real etcd which path a step
takes (the etcd calls it costs) when the lock is held elsewhere, the session is gone,
the caller's deadline passes, or a confirmed tool must run."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.sessions.flows import LockingMemoryStore, chain, engine
from tests.support.etcd_counting import CountingInterceptor
from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from tests.support.waiting import eventually
from trellis.adapters.etcd import EtcdClient, EtcdStateStore
from trellis.adapters.memory_store import MemoryStore
from trellis.dispatching import DispatchContext
from trellis.domain import JSONValue, State, StepResult, ToolCall, ToolResult
from trellis.engine import Engine
from trellis.errors import InvalidInput, InvalidSessionId, RevisionMismatch, SessionNotFound
from trellis.ports.store import OptimisticStepStore, StepConflict
from trellis.sessions import SessionManager
from trellis.tool_approval import Approval, ToolApprovals

TXN = "/etcdserverpb.KV/Txn"
RANGE = "/etcdserverpb.KV/Range"
FLOW = chain(8)
# The chain with a signal ``skip`` on each waiting node that moves on like an input.
SIGNALLED = [{**node, "on_signal": {"skip": node["to"]}} if "to" in node else node for node in FLOW]


def stored_inputs(result: StepResult) -> list[str]:
    context = result.state.context
    return [str(context[f"got_{i}"]) for i in range(len(context))]


# --- what a step reports -------------------------------------------------------------


async def test_a_step_of_an_existing_session_reports_neither_created_nor_replayed() -> None:
    manager = SessionManager(engine(SIGNALLED), MemoryStore())
    first = await manager.start("s")
    assert (first.created, first.replayed) == (True, False)
    for step in (
        await manager.navigate("s", "hi"),
        await manager.navigate("s", "again", request_id="r1"),
        await manager.signal("s", "skip"),
    ):
        assert (step.created, step.replayed) == (False, False)
    repeated = await manager.navigate("s", "again", request_id="r1")
    assert (repeated.created, repeated.replayed) == (False, True)


async def test_expected_revision_must_not_be_negative_and_zero_is_a_revision() -> None:
    manager = SessionManager(engine(SIGNALLED), MemoryStore())
    started = await manager.start("s")
    for expected in (-1, -2):
        with pytest.raises(InvalidInput, match="expected_revision: must not be negative"):
            await manager.navigate("s", "no", expected_revision=expected)
        with pytest.raises(InvalidInput, match="expected_revision"):
            await manager.signal("s", "skip", expected_revision=expected)
    # 0 is a revision the session is not at: refused as a mismatch, not as bad input.
    with pytest.raises(RevisionMismatch):
        await manager.navigate("s", "no", expected_revision=0)
    with pytest.raises(RevisionMismatch):
        await manager.navigate("s", "no", expected_revision=started.state.revision + 1)
    assert (await manager.get("s")).state.revision == started.state.revision
    applied = await manager.navigate("s", "yes", expected_revision=started.state.revision)
    assert stored_inputs(applied) == ["yes"]


# --- a timer's firing --------------------------------------------------------------------


async def test_a_firing_applies_at_its_revision_and_is_moot_after_it() -> None:
    manager = SessionManager(engine(SIGNALLED), MemoryStore())
    armed = (await manager.start("s")).state.revision
    fired = await manager.fire_signal("s", "skip", armed)
    assert fired is not None and fired.state.current_node_id == "c1"
    assert fired.state.revision > armed
    # The same timer again: the session has moved on; nothing applied, nothing written.
    assert await manager.fire_signal("s", "skip", armed) is None
    now = await manager.get("s")
    assert (now.state.current_node_id, now.state.revision) == ("c1", fired.state.revision)
    with pytest.raises(SessionNotFound):
        await manager.fire_signal("gone", "skip", 1)


async def test_a_moot_firing_on_etcd_costs_one_read(etcd_server: EtcdCluster) -> None:
    config = config_for(etcd_server)
    counter = CountingInterceptor()
    async with EtcdClient(config, interceptors=[counter]) as mine, EtcdClient(config) as theirs:
        manager = SessionManager(engine(SIGNALLED), EtcdStateStore(mine))
        other = SessionManager(engine(SIGNALLED), EtcdStateStore(theirs))
        armed = (await manager.start("s")).state.revision  # cached here at that revision
        await other.navigate("s", "answered elsewhere")
        counter.methods.clear()
        assert await manager.fire_signal("s", "skip", armed) is None
        # A fresh read settles it: no write tried from the stale cached view.
        assert counter.methods == [RANGE]
        assert stored_inputs(await other.get("s")) == ["answered elsewhere"]


# --- after the save ------------------------------------------------------------------------


async def test_a_failing_saved_hook_is_logged_and_the_step_still_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(result: StepResult) -> None:
        raise RuntimeError("timer service down")

    logger = logging.getLogger("tests.step_edges")
    manager = SessionManager(engine(FLOW), MemoryStore(), logger=logger)
    manager.on_saved(broken)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        step = await manager.start("s")
    assert step.created and (await manager.get("s")).state.revision == step.state.revision
    [record] = [r for r in caplog.records if r.name == logger.name]
    assert "after saving a step of session 's'" in record.getMessage()
    assert "timer service down" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


# --- watches: the checks of the call -----------------------------------------------------


async def test_a_watch_of_an_empty_session_id_is_refused_at_once() -> None:
    manager = SessionManager(engine(FLOW), MemoryStore())
    with pytest.raises(InvalidSessionId):
        manager.watch("")
    with pytest.raises(InvalidSessionId):
        manager.watch_events("")
    assert manager.watcher_count() == 0


async def test_deleting_a_watched_session_that_never_existed_ends_at_revision_zero() -> None:
    manager = SessionManager(engine(FLOW), MemoryStore())
    watch = manager.watch_events("ghost")
    await manager.delete("ghost")
    events = [event async for event in watch]
    assert [(e.revision, e.deleted) for e in events] == [(0, True)]


async def test_watches_on_etcd_are_counted(etcd_server: EtcdCluster) -> None:
    async with EtcdClient(config_for(etcd_server)) as client:
        manager = SessionManager(engine(FLOW), EtcdStateStore(client))
        await manager.start("w")
        assert manager.watcher_count() == 0
        async with manager.watch_events("w") as first, manager.watch("w"):
            await anext(first)
            assert manager.watcher_count() == 2
        assert manager.watcher_count() == 0


# --- which path an etcd step takes --------------------------------------------------------


async def test_a_step_of_a_missing_session_is_refused_after_one_read(etcd_server: EtcdCluster) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(config_for(etcd_server), interceptors=[counter]) as client:
        manager = SessionManager(engine(SIGNALLED), EtcdStateStore(client))
        with pytest.raises(SessionNotFound):
            await manager.navigate("never-started", "hi")
        with pytest.raises(SessionNotFound):
            await manager.signal("never-started", "skip")
        assert counter.methods == [RANGE, RANGE]  # read, refused: no lock taken


async def test_a_step_held_up_by_the_lock_makes_the_next_one_lock_directly(
    etcd_server: EtcdCluster,
) -> None:
    config = config_for(etcd_server)
    counter = CountingInterceptor()
    async with EtcdClient(config, interceptors=[counter]) as mine, EtcdClient(config) as theirs:
        manager = SessionManager(engine(FLOW), EtcdStateStore(mine), contended_for=3600.0)
        await manager.start("s")
        await mine.lease(30)  # granted once per process, not per step
        other = EtcdStateStore(theirs)
        handle, _ = await other.lock_and_load("s", 30.0)  # another replica's step runs
        counter.methods.clear()
        step = asyncio.create_task(manager.navigate("s", "mine"))
        await eventually(lambda: len(counter.methods) >= 2, "the refused commit and the lock request")
        assert not step.done()
        await other.save_and_unlock(handle, "s", None)
        assert stored_inputs(await step) == ["mine"]
        counter.methods.clear()
        # Known as contended: straight to the lock (lock+load, save+unlock).
        assert stored_inputs(await manager.navigate("s", "next")) == ["mine", "next"]
        assert counter.methods == [TXN, TXN]


async def test_a_refusal_of_the_state_another_replica_saved_is_reported_at_once(
    etcd_server: EtcdCluster,
) -> None:
    def refuse_secrets(step: StepResult) -> None:
        if "secret" in str(step.state.context.values()):
            raise InvalidInput("the reply would show a secret")

    class Outrun(EtcdStateStore):
        """Before the next commit without the lock, another replica saves a secret."""

        def __init__(self, client: EtcdClient, rival: SessionManager) -> None:
            super().__init__(client)
            self.rival: SessionManager | None = rival

        async def save_if_unlocked(self, session_id: str, state: State) -> int:
            rival, self.rival = self.rival, None
            if rival is not None:
                await rival.navigate(session_id, "secret")
            return await super().save_if_unlocked(session_id, state)

    config = config_for(etcd_server)
    counter = CountingInterceptor()
    async with EtcdClient(config, interceptors=[counter]) as mine, EtcdClient(config) as theirs:
        rival = SessionManager(engine(FLOW), EtcdStateStore(theirs))
        await rival.start("s")
        manager = SessionManager(engine(FLOW), Outrun(mine, rival), check_step=refuse_secrets)
        await mine.lease(30)
        counter.methods.clear()
        with pytest.raises(InvalidInput, match="secret"):
            await manager.navigate("s", "mine")
        # The read, the refused commit carrying the rival's state, judged: no lock taken.
        assert counter.methods == [RANGE, TXN]
        assert stored_inputs(await rival.get("s")) == ["secret"]


class TimingOut:
    """The engine, whose graph can be made to time out (a remote loader past the step's
    deadline) while it moves a session."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.timing_out = False

    async def navigate(self, state: State, input: JSONValue | ToolResult) -> State:
        if self.timing_out:
            raise TimeoutError("the graph did not load in time")
        return await self._engine.navigate(state, input)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


async def test_a_step_past_its_deadline_does_not_queue_for_the_lock(etcd_server: EtcdCluster) -> None:
    counter = CountingInterceptor()
    async with EtcdClient(config_for(etcd_server), interceptors=[counter]) as client:
        slow = TimingOut(engine(FLOW))
        manager = SessionManager(slow, EtcdStateStore(client))
        await manager.start("s")  # cached: the next step starts from the cached view
        slow.timing_out = True
        counter.methods.clear()
        with pytest.raises(TimeoutError):
            await manager.navigate("s", "late")
        assert counter.methods == []
        slow.timing_out = False
        assert stored_inputs(await manager.navigate("s", "in time")) == ["in time"]


async def test_a_confirmed_tool_runs_under_the_lock_with_its_fencing_token(
    etcd_server: EtcdCluster,
) -> None:
    seen: list[DispatchContext | None] = []

    class Charger:
        def serves(self, tool_name: str) -> bool:
            return tool_name == "charge"

        async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
            seen.append(context)
            return ToolResult(id=call.id, result="receipt")

    flow: list[dict[str, Any]] = [
        {"id": "start", "content": "go?", "wait": True, "to": "pay"},
        {"id": "pay", "do": {"name": "charge"}, "save_to": "receipt", "to": "done"},
        {"id": "done", "content": "paid: {{ .receipt }}", "wait": True},
    ]
    counter = CountingInterceptor()
    async with EtcdClient(config_for(etcd_server), interceptors=[counter]) as client:
        manager = SessionManager(
            engine(flow),
            EtcdStateStore(client),
            dispatcher=Charger(),
            approvals=ToolApprovals({"charge": Approval.CONFIRM}),
        )
        await manager.start("s")
        asked = await manager.navigate("s", "go")  # asks; nothing runs yet
        assert asked.state.current_node_id == "pay" and seen == []
        await client.lease(30)
        counter.methods.clear()
        done = await manager.navigate("s", "yes")
        assert done.state.current_node_id == "done" and done.state.context["receipt"] == "receipt"
        [context] = seen
        # Run once, under the lock (lock+load, save+unlock), fenced by that lock.
        assert counter.methods == [TXN, TXN]
        assert context is not None and context.fencing_token > 0


# --- how many contended sessions are remembered ----------------------------------------


class HeldElsewhere(LockingMemoryStore):
    """A lock-service memory store that also takes steps without the lock (an
    OptimisticStepStore, as etcd is), whose sessions in ``held`` are locked by
    another replica: a commit without the lock on them is refused as ``locked``."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()

    def load_cached(self, session_id: str) -> State | None:
        return None  # no cache: every step starts from a read

    async def load_unlocked(self, session_id: str) -> State | None:
        try:
            return await self.load(session_id)
        except SessionNotFound:
            return None

    async def save_if_unlocked(self, session_id: str, state: State) -> int:
        if session_id in self.held:
            raise StepConflict(f"session {session_id!r} is locked", current=None, locked=True)
        return await self.save(session_id, state, expected_revision=state.revision)


async def test_the_4096_sessions_contended_last_are_remembered() -> None:
    store = HeldElsewhere()
    assert isinstance(store, OptimisticStepStore)
    manager = SessionManager(engine(FLOW), store, contended_for=3600.0)
    names = [f"s{i}" for i in range(4097)]
    store.held.update(names)
    for name in names:  # each is refused without the lock, then started under it
        await manager.start(name)
    assert store.step_calls == len(names)
    store.held.clear()

    # The oldest was forgotten: its step commits without the lock again.
    before = store.step_calls
    await manager.navigate(names[0], "free")
    assert store.step_calls == before
    # The 4096 after it are remembered: their steps lock directly.
    for name in (names[1], names[2048], names[-1]):
        before = store.step_calls
        await manager.navigate(name, "contended")
        assert store.step_calls == before + 1, name
