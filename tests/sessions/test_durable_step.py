"""The durable step: load → engine → runner loop → conditional, fenced save, all under one lock."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.sessions.flows import COUNTER, LOOP, PAYMENT, CountingTool, LockingMemoryStore, engine
from trellis.adapters.file_store import FileStore
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_store import MemoryStore
from trellis.adapters.process_dispatcher import ProcessDispatcher
from trellis.dispatching import DispatchContext
from trellis.domain import ActionType, Status, ToolCall, ToolResult
from trellis.errors import (
    BackendUnavailable,
    ConflictError,
    ExecutionViolation,
    InvalidConfirmation,
    InvalidInput,
    InvalidSessionId,
    LockLost,
    SessionNotFound,
)
from trellis.ports.locker import LockHandle
from trellis.sessions import SessionManager
from trellis.step_deadline import step_deadline

Setup = Callable[[Path], dict[str, Any]]
SETUPS: dict[str, Setup] = {
    "memory-store": lambda tmp: {"store": MemoryStore()},
    "memory-store+local-locker": lambda tmp: {"store": MemoryStore(), "locker": LocalLocker()},
    "file-store+local-locker": lambda tmp: {"store": FileStore(tmp / "sessions"), "locker": LocalLocker()},
    "step-store": lambda tmp: {"store": LockingMemoryStore()},
}


def contents(result: Any) -> list[str]:
    return [a.payload for a in result.render.actions if a.type is ActionType.RENDER_CONTENT]


@pytest.mark.parametrize("setup", SETUPS.values(), ids=SETUPS.keys())
async def test_concurrent_navigates_on_one_session_lose_and_duplicate_nothing(
    tmp_path: Path, setup: Setup
) -> None:
    tool = CountingTool()
    parts = setup(tmp_path)
    manager = SessionManager(engine(COUNTER), dispatcher=InProcessDispatcher({"increment": tool}), **parts)
    async with asyncio.timeout(60):
        await manager.start("s")
        await asyncio.gather(*(manager.navigate("s", f"go {n}") for n in range(64)))
        final = await manager.get("s")
    assert final.state.context["n"] == 64
    assert tool.calls == 64
    assert final.state.history == ["start", "ask"] + ["bump", "ask"] * 64
    assert manager.lock_count() == 0
    if isinstance(parts["store"], LockingMemoryStore):
        assert parts["store"].step_calls == 65  # start + 64 steps, each through the one-trip path


async def test_two_replicas_sharing_a_store_and_a_locker_lose_nothing(tmp_path: Path) -> None:
    store, locker, tool = FileStore(tmp_path), LocalLocker(), CountingTool()
    dispatcher = InProcessDispatcher({"increment": tool})
    replicas = [
        SessionManager(engine(COUNTER), store, locker=locker, dispatcher=dispatcher) for _ in range(2)
    ]
    async with asyncio.timeout(60):
        await replicas[0].start("s")
        await asyncio.gather(*(replicas[n % 2].navigate("s", "go") for n in range(40)))
        final = await replicas[1].get("s")
    assert final.state.context["n"] == 40 == tool.calls


async def test_replicas_without_a_locker_conflict_instead_of_overwriting() -> None:
    store, tool = MemoryStore(), CountingTool()
    dispatcher = InProcessDispatcher({"increment": tool})
    replicas = [SessionManager(engine(COUNTER), store, dispatcher=dispatcher) for _ in range(2)]
    async with asyncio.timeout(60):
        await replicas[0].start("s")
        outcomes = await asyncio.gather(
            *(replicas[n % 2].navigate("s", "go") for n in range(40)), return_exceptions=True
        )
        final = await replicas[0].get("s")
    committed = [o for o in outcomes if not isinstance(o, BaseException)]
    conflicts = [o for o in outcomes if isinstance(o, ConflictError)]
    assert len(committed) + len(conflicts) == 40
    assert conflicts, "the two replicas should have raced"
    # Every committed step is in the stored state; no step overwrote another.
    assert final.state.context["n"] == len(committed)
    assert final.state.history.count("bump") == len(committed)


async def test_start_runs_the_engine_start_and_then_returns_the_session_untouched() -> None:
    manager = SessionManager(engine(COUNTER), MemoryStore(), dispatcher=InProcessDispatcher({}))
    first = await manager.start("s", {"who": "Ada"})
    assert first.state.context == {"n": 0, "who": "Ada"}  # default_context applied, initial context kept
    assert contents(first) == ["Welcome", "n is 0"]  # the pass-through node's content comes along
    again = await manager.start("s", {"who": "Bob"})
    assert again.state.to_json() == first.state.to_json()
    assert again.state.revision == first.state.revision
    assert contents(again) == ["n is 0"]


async def test_concurrent_starts_create_one_session() -> None:
    store = MemoryStore()
    manager = SessionManager(engine(COUNTER), store)
    results = await asyncio.gather(*(manager.start("s", {"who": str(n)}) for n in range(10)))
    assert {r.state.revision for r in results} == {results[0].state.revision}
    assert {r.state.context["who"] for r in results} == {"0"}


async def test_served_tools_run_and_unserved_tools_are_left_pending() -> None:
    tool = CountingTool()
    manager = SessionManager(
        engine(PAYMENT), MemoryStore(), dispatcher=InProcessDispatcher({"increment": tool})
    )
    await manager.start("s")
    waiting = await manager.navigate("s", "yes")
    assert waiting.state.status is Status.WAITING_FOR_TOOL
    call = waiting.render.tool_call()
    assert call is not None and call.name == "charge_card" and call.idempotency_key
    assert not waiting.terminal
    stored = await manager.get("s")
    assert stored.state.status is Status.WAITING_FOR_TOOL and stored.state.pending_tool_call == call.id

    done = await manager.navigate("s", ToolResult(id=call.id, result="r-42"))
    assert done.state.status is Status.TERMINATED
    assert done.terminal
    assert contents(done) == ["Paid: r-42"]


async def test_served_tools_get_their_idempotency_key_and_dispatch_context() -> None:
    seen: list[ToolCall] = []
    contexts: list[DispatchContext | None] = []

    class Recording(InProcessDispatcher):
        async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
            seen.append(call)
            contexts.append(context)
            return await super().dispatch(call, context)

    manager = SessionManager(
        engine(PAYMENT),
        MemoryStore(),
        locker=LocalLocker(),
        dispatcher=Recording({"charge_card": lambda a: "r-1"}),
    )
    await manager.start("s")
    done = await manager.navigate("s", "y")
    assert done.state.status is Status.TERMINATED and done.state.context["receipt"] == "r-1"
    assert len(seen) == 1 and len(seen[0].idempotency_key) == 64
    context = contexts[0]
    assert context is not None
    assert (context.session_id, context.idempotency_key) == ("s", seen[0].idempotency_key)
    assert context.node_id == "charge"
    # The fencing token of the step's lock: the second step's lock is a later one.
    assert context.fencing_token >= 2


async def test_pass_through_nodes_up_to_a_terminal_node_terminate_the_session() -> None:
    flow = [{"id": "start", "content": "Hello", "to": "end"}, {"id": "end", "content": "Bye"}]
    manager = SessionManager(engine(flow), MemoryStore())
    result = await manager.start("s")
    assert contents(result) == ["Hello", "Bye"]
    assert result.terminal and result.state.status is Status.TERMINATED
    assert (await manager.get("s")).state.terminated


# --- failures leave the stored state exactly as it was -------------------------------------


async def snapshot(manager: SessionManager, session_id: str) -> tuple[dict[str, Any], int]:
    state = (await manager.get(session_id)).state
    return state.to_json(), state.revision


async def test_an_engine_error_changes_nothing() -> None:
    manager = SessionManager(engine(PAYMENT), MemoryStore())
    await manager.start("s")
    before = await snapshot(manager, "s")
    with pytest.raises(InvalidConfirmation):
        await manager.navigate("s", "perhaps")
    assert await snapshot(manager, "s") == before
    assert manager.lock_count() == 0


async def test_a_tool_result_for_another_call_changes_nothing() -> None:
    manager = SessionManager(engine(PAYMENT), MemoryStore())
    await manager.start("s")
    await manager.navigate("s", "yes")
    before = await snapshot(manager, "s")
    with pytest.raises(Exception, match="does not match pending call"):
        await manager.navigate("s", ToolResult(id="someone-else", result=1))
    assert await snapshot(manager, "s") == before


async def test_a_step_that_outlives_its_lock_is_refused_and_changes_nothing() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_increment(args: dict[str, Any]) -> int:
        entered.set()
        await release.wait()
        return int(args["n"]) + 1

    locker = LocalLocker()
    manager = SessionManager(
        engine(COUNTER),
        MemoryStore(),
        locker=locker,
        dispatcher=InProcessDispatcher({"increment": slow_increment}),
        lock_ttl=0.2,
    )
    await manager.start("s")
    before = await snapshot(manager, "s")
    step = asyncio.create_task(manager.navigate("s", "go"))
    async with asyncio.timeout(30):
        await entered.wait()
        # Another process takes the expired lock: this is how the slow step loses it.
        other = await locker.acquire("s", ttl=30)
        release.set()
        with pytest.raises(LockLost):
            await step
        await other.unlock()
    assert await snapshot(manager, "s") == before


@pytest.mark.parametrize("setup", SETUPS.values(), ids=SETUPS.keys())
async def test_a_step_whose_callers_deadline_passed_is_abandoned_not_saved(
    tmp_path: Path, setup: Setup
) -> None:
    manager = SessionManager(engine(PAYMENT), **setup(tmp_path))
    await manager.start("s")
    before = await snapshot(manager, "s")
    with step_deadline(0.0):  # the caller's deadline has passed by the time the step would save
        with pytest.raises(TimeoutError, match="nothing was saved"):
            await manager.navigate("s", "yes")
    assert await snapshot(manager, "s") == before
    assert manager.lock_count() == 0
    with step_deadline(30.0):
        await manager.navigate("s", "yes")  # the lock was released; a step in time is saved
    assert (await snapshot(manager, "s"))[1] == before[1] + 1


async def test_an_endless_pass_through_loop_is_stopped_and_saves_nothing() -> None:
    manager = SessionManager(engine(LOOP), MemoryStore(), max_auto_steps=50)
    with pytest.raises(ExecutionViolation, match="50 automatic steps"):
        await manager.start("s")
    with pytest.raises(SessionNotFound):
        await manager.get("s")


async def test_input_is_sanitised_and_oversized_input_refused() -> None:
    flow = [{"id": "start", "wait": True, "save_to": "name", "to": "start"}]
    manager = SessionManager(engine(flow), MemoryStore(), input_limit=16)
    await manager.start("s")
    result = await manager.navigate("s", "A\x1bda\x00\n")
    assert result.state.context["name"] == "Ada\n"
    before = await snapshot(manager, "s")
    with pytest.raises(InvalidInput, match="exceeds maximum allowed size"):
        await manager.navigate("s", "x" * 17)
    assert await snapshot(manager, "s") == before


async def test_missing_sessions_and_bad_ids() -> None:
    manager = SessionManager(engine(COUNTER), MemoryStore())
    with pytest.raises(SessionNotFound):
        await manager.navigate("ghost", "hi")
    with pytest.raises(SessionNotFound):
        await manager.signal("ghost", "interrupt")
    with pytest.raises(InvalidSessionId):
        await manager.start("")
    with pytest.raises(InvalidSessionId):
        await manager.start("../escape")
    assert (await manager.list()).session_ids == []


async def test_delete_and_list() -> None:
    manager = SessionManager(engine(COUNTER), MemoryStore())
    for name in ("b", "a", "c"):
        await manager.start(name)
    assert (await manager.list()).session_ids == ["a", "b", "c"]
    page = await manager.list(page_size=2)
    assert page.session_ids == ["a", "b"] and page.next_page_token == "b"
    await manager.delete("b")
    await manager.delete("b")
    assert (await manager.list()).session_ids == ["a", "c"]
    with pytest.raises(SessionNotFound):
        await manager.get("b")


async def test_max_auto_steps_counts_every_automatic_move() -> None:
    flow = [
        {"id": "start", "content": "one", "to": "mid"},
        {"id": "mid", "content": "two", "to": "ask"},
        {"id": "ask", "content": "three", "wait": True, "to": "ask"},
    ]
    enough = await SessionManager(engine(flow), MemoryStore(), max_auto_steps=2).start("s")
    assert contents(enough) == ["one", "two", "three"]
    with pytest.raises(ExecutionViolation):
        await SessionManager(engine(flow), MemoryStore(), max_auto_steps=1).start("s")


async def test_a_process_tool_runs_inside_the_step(tmp_path: Path) -> None:
    script = tmp_path / "double.py"
    script.write_text(
        "import json, os\nprint(json.dumps({'twice': json.loads(os.environ['TRELLIS_ARGS'])['n'] * 2}))\n"
    )
    (tmp_path / "tools.yaml").write_text(
        f"tools:\n  - name: double\n    command: {sys.executable!r}\n    args: [double.py]\n"
    )
    flow = [
        {"id": "start", "do": {"name": "double", "args": {"n": 21}}, "save_to": "out", "to": "show"},
        {"id": "show", "content": "{{ .out.twice }}", "wait": True, "to": "show"},
    ]
    dispatcher = ProcessDispatcher.from_file(tmp_path / "tools.yaml")
    async with asyncio.timeout(30):
        result = await SessionManager(engine(flow), FileStore(tmp_path / "s"), dispatcher=dispatcher).start(
            "s"
        )
    assert contents(result) == ["42"]
    assert result.state.context["out"] == {"twice": 42}


class UnreliableLocker(LocalLocker):
    """A LocalLocker whose lock service fails in the ways a network one can."""

    def __init__(self, *, fail_acquire: bool = False) -> None:
        super().__init__()
        self.fail_acquire = fail_acquire

    async def acquire(self, key: str, ttl: float) -> Any:
        if self.fail_acquire:
            raise ConnectionError("lock service unreachable")
        return _UnlockFails(await super().acquire(key, ttl))


class _UnlockFails:
    """A held lock whose release reports a network error after releasing."""

    def __init__(self, inner: LockHandle) -> None:
        self.inner = inner
        self.key = inner.key
        self.token = inner.token

    def held(self) -> bool:
        return self.inner.held()

    async def unlock(self) -> None:
        await self.inner.unlock()
        raise ConnectionError("connection reset while unlocking")


async def test_an_unlock_failure_is_logged_and_the_step_still_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = SessionManager(engine(COUNTER), MemoryStore(), locker=UnreliableLocker())
    await manager.start("s")
    result = await manager.navigate("s", "go")
    assert result.state.current_node_id == "bump"
    assert (await manager.get("s")).state.revision == result.state.revision
    assert "failed to release the lock of session 's'" in caplog.text


async def test_a_lock_service_that_cannot_be_reached_fails_the_step_cleanly() -> None:
    store = MemoryStore()
    await SessionManager(engine(COUNTER), store).start("s")
    before = (await store.load("s")).to_json()
    manager = SessionManager(engine(COUNTER), store, locker=UnreliableLocker(fail_acquire=True))
    with pytest.raises(
        BackendUnavailable, match="failed to acquire distributed lock: lock service unreachable"
    ):
        await manager.navigate("s", "go")
    assert (await store.load("s")).to_json() == before
    assert manager.lock_count() == 0


class _BrokenDisk(MemoryStore):
    """A store whose reads (or writes) fail with an error of its own, not a trellis one."""

    def __init__(self, *, load_fails: bool = False, save_fails: bool = False) -> None:
        super().__init__()
        self.load_fails = load_fails
        self.save_fails = save_fails

    async def load(self, session_id: str) -> Any:
        if self.load_fails:
            raise RuntimeError("disk on fire")
        return await super().load(session_id)

    async def save(self, session_id: str, state: Any, **kwargs: Any) -> int:
        if self.save_fails:
            raise OSError(28, "No space left on device")
        return await super().save(session_id, state, **kwargs)


@pytest.mark.parametrize("locker", [None, LocalLocker()], ids=["no-locker", "local-locker"])
async def test_a_store_read_failure_names_the_session_and_what_was_done(locker: LocalLocker | None) -> None:
    manager = SessionManager(engine(COUNTER), _BrokenDisk(load_fails=True), locker=locker)
    with pytest.raises(BackendUnavailable, match=r"loading session 's' failed: disk on fire") as caught:
        await manager.start("s")
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert manager.lock_count() == 0


async def test_a_store_write_failure_names_the_session_and_what_was_done() -> None:
    store = _BrokenDisk()
    manager = SessionManager(engine(COUNTER), store, locker=LocalLocker())
    await manager.start("s")
    before = (await store.load("s")).to_json()
    store.save_fails = True
    with pytest.raises(BackendUnavailable, match=r"saving session 's' failed: .*No space left on device"):
        await manager.navigate("s", "go")
    assert (await store.load("s")).to_json() == before
    assert manager.lock_count() == 0
