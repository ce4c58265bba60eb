"""SessionManager: durable steps over an engine and a store (DESIGN "A durable step").

One step — ``start``, ``navigate`` or ``signal`` of one session — runs inside
one critical section from the load to the save (docs/engine-differences.md, fix #1):

1. take the session's local lock (per process, FIFO) and, when configured, the
   distributed lock, whose handle is the write fence;
2. load the state and its revision;
3. apply the step with the engine, then run the runner loop: while the session
   waits for a tool a dispatcher serves, dispatch it (with its idempotency key)
   and navigate with the result; while the current node needs no input, advance
   with ``""`` (docs/engine.md, "Sessions and Engine: who moves on"); at most
   ``max_auto_steps`` moves;
4. save, conditioned on the revision loaded and on still holding the lock;
5. release the locks; publish what changed to ``watch``ers.

A step that fails anywhere leaves the stored state exactly as it was. Steps 1-2
and 4-5 go through one ``trellis.ports.StepStore``: a store that is its own lock
service (etcd) does each in one round trip; any other store and locker are
combined by trellis.locked_store.LockedStore.

When the store is also an ``OptimisticStepStore`` (etcd), a step first tries
without the distributed lock: it starts from this replica's cached view of the
session (Start: a fresh read), computes the step, and saves it in ONE
transaction that holds only if the revision is still the one it started from
and nobody holds or waits for the session's lock. It never dispatches a tool:
a step that would is abandoned before dispatching anything and redone on the
lock path, so a tool never runs twice for one step. A refused save (the
session moved) is retried once from the state read in the same transaction;
a lock holder or waiter, or a second refusal, sends the step to the lock path,
which is FIFO-fair under contention; for a second after that, steps of that
session take the lock path directly. Errors computed from a cached (possibly
stale) state are not trusted either: the lock path recomputes them.

What a step returns: the new state (with its stored revision) and the actions
to show. Nodes the runner loop passed through on the way (pass-through text,
served tools) contribute their non-empty content (and system messages) in
order, ahead of the actions of the node the step stopped at, so a client sees
everything a terminal runner would have printed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import dataclasses
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

from trellis import request_ids
from trellis.diff import diff
from trellis.dispatching import DispatchContext
from trellis.domain import (
    Action,
    ActionType,
    JSONValue,
    RenderResult,
    SessionEvent,
    State,
    StateDiff,
    Status,
    StepResult,
    ToolCall,
    ToolResult,
)
from trellis.errors import (
    BackendUnavailable,
    ConflictError,
    ExecutionViolation,
    InvalidInput,
    InvalidSessionId,
    RevisionMismatch,
    SessionNotFound,
    TrellisError,
    WatchRevisionCompacted,
)
from trellis.keyed_locks import KeyedLocks
from trellis.locked_store import step_store_for
from trellis.no_match import matched_nothing, with_no_match_notice
from trellis.ports.dispatcher import ActionDispatcher
from trellis.ports.engine import EnginePort
from trellis.ports.locker import DistributedLocker, LockHandle
from trellis.ports.store import (
    OptimisticStepStore,
    SessionPage,
    StateStore,
    StepConflict,
    StepStore,
    StoreEvent,
    StoreEvents,
    WatchableStore,
)
from trellis.request_ids import check_request_id
from trellis.sanitize import input_limit_from_env, sanitize_input
from trellis.step_deadline import check_deadline, current_deadline
from trellis.streams import QueueStream
from trellis.tool_approval import DENIED_BY_USER, Approval, ToolApprovals, approved, confirmation, denied

_WAITING: Final = (Status.WAITING_FOR_TOOL, Status.ROLLING_BACK)
_WATCH_QUEUE_SIZE: Final = 256
# The fencing token of the lock the running step holds, passed to the dispatcher so that
# a sidecar can refuse calls from a holder that has since lost the lock.
_STEP_FENCE: contextvars.ContextVar[int] = contextvars.ContextVar("trellis_step_fence", default=0)

_UNLOCKED_ATTEMPTS: Final = 2
"""Tries of a step without the lock before it queues for the lock."""
_CONTENDED_FOR: Final = 1.0
"""Default seconds a session whose step had to queue for the lock takes the lock path
directly (its next attempts without the lock would most likely be refused too)."""
_CONTENDED_REMEMBERED: Final = 4096

# What a step's work returns: the state to keep, what to show, and whether to save it.
_Outcome = tuple[State, RenderResult, bool]
# The work gets the loaded state and whether it may dispatch tools (only under the lock).
_Work = Callable[[State | None, bool], Awaitable[_Outcome]]


class _Request:
    """What a step was asked with beyond its input: the caller's request ID (empty: none)
    with the digest of the request, and the revision it must apply on (None: any). Its
    ``guard`` wraps a step's work with those checks; the flags tell the outcome of the
    work's last run (a step may run it more than once, e.g. from a stale cached state)."""

    __slots__ = ("created", "digest", "expected_revision", "id", "replayed", "starts")

    def __init__(
        self, request_id: str, kind: str, what: JSONValue | ToolResult, expected_revision: int | None
    ) -> None:
        self.id = request_id
        self.starts = kind == "start"
        # Only an identified request is compared with what was applied before.
        self.digest = request_ids.digest(kind, what) if request_id else ""
        self.expected_revision = expected_revision
        self.created = False
        self.replayed = False

    def guard(self, work: _Work, engine: EnginePort) -> _Work:
        async def guarded(loaded: State | None, may_dispatch: bool) -> _Outcome:
            self.replayed = False
            if self.id and loaded is not None and request_ids.find(loaded, self.id, self.digest):
                # Applied before (a Start records its ID only when it created the session).
                self.replayed, self.created = True, self.starts
                return loaded, await engine.render(loaded), False
            # After the ID: a retry of a step that was applied is answered, not refused.
            if self.expected_revision is not None and loaded is not None:
                if loaded.revision != self.expected_revision:
                    raise RevisionMismatch(loaded.session_id, self.expected_revision, loaded.revision)
            state, render, changed = await work(loaded, may_dispatch)
            if changed and self.id:
                request_ids.record(state, loaded, self.id, self.digest)
            return state, render, changed

        return guarded

    def result(self, state: State, render: RenderResult) -> StepResult:
        return StepResult(state=state, render=render, created=self.created, replayed=self.replayed)


class _NeedsLock(Exception):
    """A step without the lock reached a tool a dispatcher serves: nothing was dispatched,
    the step is redone on the lock path."""


class SessionManager:
    def __init__(
        self,
        engine: EnginePort,
        store: StateStore,
        *,
        locker: DistributedLocker | None = None,
        step_store: StepStore | None = None,
        dispatcher: ActionDispatcher | None = None,
        lock_ttl: float = 30.0,
        max_auto_steps: int = 1000,
        logger: logging.Logger | None = None,
        input_limit: int | None = None,
        check_step: Callable[[StepResult], None] | None = None,
        optimistic: bool = True,
        contended_for: float = _CONTENDED_FOR,
        approvals: ToolApprovals | None = None,
    ) -> None:
        """``lock_ttl`` must exceed the longest step (tools included) when a locker is used: a
        step that outlives its lock is refused at save time (LockLost). ``step_store``: how a
        step locks, loads and saves (default: ``store`` itself when it is a StepStore and no
        ``locker`` is given, else trellis.locked_store.LockedStore(store, locker)); give one to
        wrap it, e.g. to meter lock waits. ``input_limit``: bytes of one text input (default:
        TRELLIS_MAX_INPUT_SIZE or 4096). ``check_step``: called with every step's outcome
        before it is saved; what it raises refuses the step (nothing saved), e.g. a reply that
        would not fit the server's message limit. ``optimistic``: try steps without the lock
        first when the step store offers it (an OptimisticStepStore); False: always lock.
        ``contended_for``: seconds a session whose step had to queue for the lock goes
        straight to the lock path.
        ``approvals``: tools to deny, or to confirm through the session before they run
        (trellis.tool_approval)."""
        if max_auto_steps < 1:
            raise ValueError(f"max_auto_steps must be at least 1, got {max_auto_steps}")
        self._engine = engine
        self._store = store
        self._dispatcher = dispatcher
        self._approvals = approvals or None
        self._lock_ttl = lock_ttl
        self._max_auto_steps = max_auto_steps
        self._logger = logger or logging.getLogger("trellis.sessions")
        self._input_limit = input_limit if input_limit is not None else input_limit_from_env()
        self._check_step = check_step
        if step_store is not None and locker is not None:
            raise ValueError("give a locker or a step_store, not both (a step_store locks itself)")
        if step_store is None:
            step_store = step_store_for(store, locker, logger=self._logger)
        self._steps = step_store
        self._unlocked = self._steps if optimistic and isinstance(self._steps, OptimisticStepStore) else None
        self._locks = KeyedLocks()
        # Sessions recently contended: session ID -> loop time until which they lock directly.
        self._contended: OrderedDict[str, float] = OrderedDict()
        self._contended_for = contended_for
        # Weak: a watch nobody holds any more unsubscribes itself (SessionWatch.__del__).
        self._watchers: dict[str, weakref.WeakSet[SessionWatch[Any]]] = {}
        # A store every replica writes to feeds the watches itself (all replicas' steps).
        self._watchable = store if isinstance(store, WatchableStore) else None
        self._store_watches: weakref.WeakSet[SessionWatch[Any]] = weakref.WeakSet()
        self._saved_hooks: builtins.list[Callable[[StepResult], Awaitable[None]]] = []
        self._saving_hooks: builtins.list[Callable[[StepResult], None]] = []

    # --- public API ---------------------------------------------------------------------

    async def start(
        self, session_id: str, context: Mapping[str, JSONValue] | None = None, *, request_id: str = ""
    ) -> StepResult:
        """Load or start: an existing session is returned untouched (``context`` ignored);
        a new one is created with the engine's Start (defaults, a pending entry tool) and
        advanced like any step. ``created`` in the result says which happened: of several
        simultaneous starts of one session exactly one creates it. ``request_id``: see
        trellis.request_ids (a repeated Start that had created the session says so again)."""
        request = _Request(request_id, "start", None, None)

        async def work(loaded: State | None, may_dispatch: bool) -> _Outcome:
            request.created = loaded is None
            if loaded is not None:
                return loaded, await self._render(loaded), False
            state, render = await self._advance(await self._engine.start(session_id, context), may_dispatch)
            return state, render, True

        # Not from the cache: an existing session is returned as stored, without a write to check it.
        try:
            return await self._step(session_id, work, cached=False, request=request)
        except ConflictError:
            if not request.created:
                raise
            # Another process created the session between our read and our write (stores
            # without a shared lock): it is now found, and this start reports created=False.
            return await self._step(session_id, work, cached=False, request=request)

    async def get(self, session_id: str) -> StepResult:
        """The stored state and the actions of its current node. Raises SessionNotFound."""
        _check_id(session_id)
        state = await self._store.load(session_id)
        return StepResult(state=state, render=await self._render(state))

    async def navigate(
        self,
        session_id: str,
        input: JSONValue | ToolResult,
        *,
        request_id: str = "",
        expected_revision: int | None = None,
    ) -> StepResult:
        """One durable step with user input (text is sanitised first) or a tool result.
        ``request_id``: applied at most once (trellis.request_ids). ``expected_revision``:
        apply only while the session is at that revision, else RevisionMismatch."""
        if isinstance(input, str):
            input = sanitize_input(input, self._input_limit)
        request = _Request(request_id, "navigate", input, expected_revision)

        async def work(loaded: State | None, may_dispatch: bool) -> _Outcome:
            if loaded is None:
                raise SessionNotFound(session_id)
            answer = await self._answer(loaded, input, may_dispatch) if self._approvals else input
            state, render = await self._advance(await self._engine.navigate(loaded, answer), may_dispatch)
            if matched_nothing(loaded, state, input):
                render = with_no_match_notice(render)
            return state, render, True

        return await self._step(session_id, work, cached=True, request=request)

    async def signal(
        self, session_id: str, name: str, *, request_id: str = "", expected_revision: int | None = None
    ) -> StepResult:
        """One durable step after a signal (``interrupt``, ``timeout``, a custom name);
        ``request_id`` and ``expected_revision`` as for ``navigate``."""
        request = _Request(request_id, "signal", name, expected_revision)

        async def work(loaded: State | None, may_dispatch: bool) -> _Outcome:
            if loaded is None:
                raise SessionNotFound(session_id)
            state, render = await self._advance(await self._engine.signal(loaded, name), may_dispatch)
            return state, render, True

        return await self._step(session_id, work, cached=True, request=request)

    async def fire_signal(self, session_id: str, name: str, revision: int) -> StepResult | None:
        """``signal`` only while the session is still at ``revision`` (a timer armed then):
        the step is saved conditioned on that revision, so of several firings of one
        timer at most one applies. None: the session had moved on (nothing applied)."""
        applied = False

        async def work(loaded: State | None, may_dispatch: bool) -> _Outcome:
            nonlocal applied
            if loaded is None:
                raise SessionNotFound(session_id)
            if loaded.revision != revision:
                applied = False
                return loaded, RenderResult(actions=(), terminal=False), False
            applied = True
            state, render = await self._advance(await self._engine.signal(loaded, name), may_dispatch)
            return state, render, True

        # Not from the cache: a timer is often moot (answered) or armed by another replica,
        # and a fresh read settles both without taking the lock.
        result = await self._step(session_id, work, cached=False, request=_Request("", "signal", name, None))
        return result if applied else None

    def on_saving(self, hook: Callable[[StepResult], None]) -> None:
        """Call ``hook`` with every step's outcome right before it is saved (e.g. to stage
        the durable timer the store writes in the same transaction). What it raises
        refuses the step, like ``check_step``."""
        self._saving_hooks.append(hook)

    def on_saved(self, hook: Callable[[StepResult], Awaitable[None]]) -> None:
        """Call ``hook`` after every saved step, before the step returns (e.g. to arm the
        durable timer the new state waits on). What it raises is logged, not raised: the
        step is saved by then."""
        self._saved_hooks.append(hook)

    async def delete(self, session_id: str) -> None:
        """Remove the session (idempotent) and end its watchers' streams."""
        _check_id(session_id)
        async with self._locks.hold(session_id):
            handle, loaded = await self._steps.lock_and_load(session_id, self._lock_ttl)
            try:
                await self._store.delete(session_id)
            finally:
                await self._unlock(handle, session_id)
        # The store has no revision for a deletion: the last version's stands for it.
        deleted = SessionEvent(revision=loaded.revision if loaded is not None else 0, deleted=True)
        for watch in builtins.list(self._watchers.get(session_id, ())):
            watch._offer(deleted)

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        return await self._store.list(page_size=page_size, page_token=page_token)

    def watch(self, session_id: str, *, start_revision: int = 0) -> SessionWatch[StateDiff]:
        """What changes in ``session_id`` after each committed step, as StateDiffs (each
        with the ``revision`` it leads to); ``start_revision``: see ``watch_events``.

        With a store of this process only, subscribed as soon as this is called (not on
        first iteration); with a WatchableStore (etcd), the changes of every replica
        after the revision read on first iteration. SessionNotFound (on iteration) when
        the session does not exist. The stream ends when the session is deleted or the
        watch is closed (``aclose``, ``async with``, or dropping it). A watcher that
        falls more than 256 events behind loses the newest ones (never blocks a step)."""
        _check_id(session_id)
        return SessionWatch(self, session_id, _check_start(start_revision), _diff_of, strict=False)

    def watch_events(self, session_id: str, *, start_revision: int = 0) -> SessionWatch[SessionEvent]:
        """``watch`` as SessionEvents, made to be resumed: a first bookmark with the
        revision the watch starts after, then each change, bookmarks now and then while
        nothing changes (WatchableStore), and the deletion, which ends the stream.

        ``start_revision`` n > 0 resumes: every change saved at revision n or later (a
        client passes the last revision it received + 1). WatchRevisionCompacted (on
        iteration, ``current`` set) when changes since n are no longer known: the store
        compacted them, or (a store without a history) the session changed since. A
        watcher that falls more than 256 events behind gets BackendUnavailable and
        resumes from its last revision."""
        _check_id(session_id)
        return SessionWatch(self, session_id, _check_start(start_revision), _same_event, strict=True)

    async def repair_after_reload(self, state: State) -> State:
        """Resume guardrail after the graph changed (docs/engine-differences.md, fix #4): a state
        waiting for a tool whose node is gone, or no longer has a ``do``, is set back to
        ``active`` with no pending call, so the runner does not wait forever. Returns a
        repaired copy, or ``state`` itself (same object) when nothing needed repair; saving
        the copy is the caller's choice."""
        if state.status is not Status.WAITING_FOR_TOOL:
            return state
        try:
            node = next((n for n in await self._engine.inspect() if n.id == state.current_node_id), None)
        except TrellisError as exc:
            self._logger.warning("cannot inspect the graph to check session %r: %s", state.session_id, exc)
            node = None
        if node is not None and node.do is not None:
            return state
        self._logger.warning(
            "session %r was waiting for tool call %r but node %r %s; resuming it as active",
            state.session_id,
            state.pending_tool_call,
            state.current_node_id,
            "no longer exists" if node is None else "no longer calls a tool",
        )
        repaired = state.clone()
        repaired.status = Status.ACTIVE
        repaired.pending_tool_call = ""
        return repaired

    def lock_count(self) -> int:
        """Sessions with a step running or waiting in this process (0 when idle)."""
        return len(self._locks)

    def watcher_count(self) -> int:
        """Open watches across all sessions."""
        return sum(len(watches) for watches in self._watchers.values()) + len(self._store_watches)

    # --- the critical section -------------------------------------------------------------

    async def _step(self, session_id: str, work: _Work, *, cached: bool, request: _Request) -> StepResult:
        _check_id(session_id)
        check_request_id(request.id)
        if request.expected_revision is not None and request.expected_revision < 0:
            raise InvalidInput(f"expected_revision: must not be negative, got {request.expected_revision}")
        work = request.guard(work, self._engine)
        async with self._locks.hold(session_id):
            if self._unlocked is not None and not self._recently_contended(session_id):
                done = await self._step_unlocked(self._unlocked, session_id, work, cached, request)
                if done is not None:
                    return done
            handle, loaded = await self._steps.lock_and_load(session_id, self._lock_ttl)
            _STEP_FENCE.set(handle.token)
            try:
                state, render, changed = await work(loaded, True)
                if changed:
                    self._check_before_save(state, render)
            except BaseException:
                await self._unlock(handle, session_id)
                raise
            if not changed:
                await self._unlock(handle, session_id)
                return request.result(state, render)
            # Conditioned on the revision loaded (0: the session must not exist yet).
            state.revision = loaded.revision if loaded is not None else 0
            state.revision = await self._steps.save_and_unlock(handle, session_id, state)
            self._publish(session_id, loaded, state)
            return await self._saved(request.result(state, render))

    async def _step_unlocked(
        self, store: OptimisticStepStore, session_id: str, work: _Work, cached: bool, request: _Request
    ) -> StepResult | None:
        """The step without the lock: one transaction when the cached view is current.
        None: take the lock path (nothing was saved or dispatched)."""
        loaded = store.load_cached(session_id) if cached else None
        fresh = loaded is None
        if fresh:
            loaded = await store.load_unlocked(session_id)
        for _ in range(_UNLOCKED_ATTEMPTS):
            try:
                state, render, changed = await work(loaded, False)
            except _NeedsLock:
                return None
            except TimeoutError:
                raise  # the caller's deadline passed: no path would save this step
            except Exception:
                if fresh:
                    raise  # computed from the stored state: what the lock path would say
                return None  # maybe only because the cached state is stale
            if not changed:
                if fresh:
                    return request.result(state, render)
                # E.g. a retried request found in the cached state: answer from a fresh read.
                loaded, fresh = await store.load_unlocked(session_id), True
                continue
            try:
                self._check_before_save(state, render)
            except TimeoutError:
                raise
            except Exception:
                if fresh:
                    raise
                return None  # judged on a maybe stale cached state: the lock path decides
            # Conditioned on the revision started from (0: the session must not exist yet).
            state.revision = loaded.revision if loaded is not None else 0
            try:
                state.revision = await store.save_if_unlocked(session_id, state)
            except StepConflict as conflict:
                if conflict.locked:
                    self._note_contended(session_id)
                    return None  # queue behind the holder and its waiters (FIFO)
                loaded, fresh = conflict.current, True
                continue
            self._publish(session_id, loaded, state)
            return await self._saved(request.result(state, render))
        self._note_contended(session_id)
        return None

    async def _saved(self, result: StepResult) -> StepResult:
        for hook in self._saved_hooks:
            try:
                await hook(result)
            except Exception as exc:
                self._logger.warning(
                    "after saving a step of session %r: %s", result.state.session_id, exc, exc_info=True
                )
        return result

    def _check_before_save(self, state: State, render: RenderResult) -> None:
        check_deadline()  # a step its caller gave up on is abandoned, not saved
        if self._check_step is not None:
            self._check_step(StepResult(state=state, render=render))
        for hook in self._saving_hooks:
            hook(StepResult(state=state, render=render))

    def _recently_contended(self, session_id: str) -> bool:
        until = self._contended.get(session_id)
        if until is None:
            return False
        if until > asyncio.get_running_loop().time():
            return True
        del self._contended[session_id]
        return False

    def _note_contended(self, session_id: str) -> None:
        self._contended[session_id] = asyncio.get_running_loop().time() + self._contended_for
        self._contended.move_to_end(session_id)
        while len(self._contended) > _CONTENDED_REMEMBERED:
            self._contended.popitem(last=False)

    async def _unlock(self, handle: LockHandle, session_id: str) -> None:
        try:
            await self._steps.save_and_unlock(handle, session_id, None)
        except Exception as exc:
            # Never fail a step over its release: the lock expires by its TTL anyway.
            self._logger.warning("failed to release the lock of session %r: %s", session_id, exc)

    # --- the runner loop ------------------------------------------------------------------

    async def _advance(self, state: State, may_dispatch: bool) -> tuple[State, RenderResult]:
        """Run served tools and pass-through nodes until the session needs the caller.
        ``may_dispatch`` False: raise _NeedsLock instead of dispatching a served tool."""
        shown: builtins.list[Action] = []
        moves = 0
        while state.status is not Status.TERMINATED:
            render = await self._engine.render(state)
            if state.status in _WAITING:
                call = _pending_call(render, state.pending_tool_call)
                approval = self._approval(call)
                if call is not None and approval is Approval.CONFIRM:
                    return state, _shown_then(shown, confirmation(render, call))
                denying = call is not None and approval is Approval.DENY
                dispatcher = self._dispatcher
                if not denying and (call is None or dispatcher is None or not dispatcher.serves(call.name)):
                    return state, _shown_then(shown, render)  # the caller runs this tool
                assert call is not None
                if not may_dispatch:
                    raise _NeedsLock
                moves = self._count_move(state, moves)
                if denying or dispatcher is None:
                    result = denied(call)  # the server's policy: the engine takes on_denied
                else:
                    result = await dispatcher.dispatch(call, _dispatch_context(state, call))
                shown.extend(_passed(render))
                state = await self._engine.navigate(state, result)
                continue
            if render.input_request() is not None:
                return state, _shown_then(shown, render)
            # A node that needs no input is passed through (docs/engine.md, "Sessions and Engine:
            # who moves on").
            moves = self._count_move(state, moves)
            moved = await self._engine.navigate(state, "")
            if (
                moved.status is not Status.TERMINATED
                and moved.current_node_id == state.current_node_id
                and len(moved.history) == len(state.history)
            ):
                return state, _shown_then(shown, render)  # no transition matched: it waits for a signal
            shown.extend(_passed(render))
            state = moved
        return state, RenderResult(actions=tuple(shown), terminal=True)

    # --- tool approvals (trellis.tool_approval) -----------------------------------------

    def _approval(self, call: ToolCall | None) -> Approval:
        """ALLOW, DENY, or CONFIRM for a call the server would run (a tool the caller runs
        is the caller's to confirm)."""
        if call is None or self._approvals is None:
            return Approval.ALLOW
        approval = self._approvals.of(call.name)
        served = self._dispatcher is not None and self._dispatcher.serves(call.name)
        if approval is Approval.CONFIRM and not served:
            return Approval.ALLOW
        return approval

    async def _render(self, state: State) -> RenderResult:
        """The state's actions, with the question instead of a call waiting for confirmation."""
        render = await self._engine.render(state)
        if self._approvals is not None and state.status in _WAITING:
            call = _pending_call(render, state.pending_tool_call)
            if call is not None and self._approval(call) is Approval.CONFIRM:
                return confirmation(render, call)
        return render

    async def _answer(
        self, loaded: State, input: JSONValue | ToolResult, may_dispatch: bool
    ) -> JSONValue | ToolResult:
        """``input`` as the engine takes it: when the session waits for the confirmation of
        a call, the call's result (run when the answer is yes, denied when no)."""
        if loaded.status not in _WAITING:
            return input
        call = _pending_call(await self._engine.render(loaded), loaded.pending_tool_call)
        if call is None or self._approval(call) is not Approval.CONFIRM:
            return input
        if not approved(call, input):
            return denied(call, DENIED_BY_USER)
        if not may_dispatch:
            raise _NeedsLock
        assert self._dispatcher is not None  # CONFIRM is only given for a served call
        return await self._dispatcher.dispatch(call, _dispatch_context(loaded, call))

    def _count_move(self, state: State, moves: int) -> int:
        if moves >= self._max_auto_steps:
            raise ExecutionViolation(
                state.current_node_id,
                f"session {state.session_id!r} was still moving after {self._max_auto_steps} automatic "
                f"steps, at node {state.current_node_id!r} (a loop of nodes that need no input?); "
                "nothing was saved",
            )
        return moves + 1

    # --- watchers ----------------------------------------------------------------------

    def _publish(self, session_id: str, old: State | None, new: State) -> None:
        watches = self._watchers.get(session_id)
        if not watches:
            return
        event = _event_of(old, new, new.revision)
        for watch in builtins.list(watches):
            watch._offer(event, old.revision if old is not None else 0)

    def _subscribe(self, watch: SessionWatch[Any]) -> None:
        if self._watchable is not None:
            self._store_watches.add(watch)  # counted only: the store feeds it
        else:
            self._watchers.setdefault(watch.session_id, weakref.WeakSet()).add(watch)

    def _unsubscribe(self, watch: QueueStream[Any]) -> None:
        assert isinstance(watch, SessionWatch)
        self._store_watches.discard(watch)
        watches = self._watchers.get(watch.session_id)
        if watches is None:
            return
        watches.discard(watch)
        if not watches:
            del self._watchers[watch.session_id]

    async def _current(self, session_id: str) -> StepResult | None:
        """The session now, for a watch that must start over (None: it is gone)."""
        try:
            return await self.get(session_id)
        except SessionNotFound:
            return None


def _passed(render: RenderResult) -> builtins.list[Action]:
    """What a node the loop passed through leaves to show: its content and messages (its tool
    call was run, its empty content — every untyped node has one — is nothing to show)."""
    return [
        action
        for action in render.actions
        if action.type is not ActionType.CALL_TOOL
        and not (action.type is ActionType.RENDER_CONTENT and action.payload == "")
    ]


def _shown_then(shown: builtins.list[Action], render: RenderResult) -> RenderResult:
    """The actions of the nodes passed through, then those of the node the step stopped at."""
    if not shown:
        return render
    return dataclasses.replace(render, actions=(*shown, *render.actions))


def _pending_call(render: RenderResult, pending_id: str) -> ToolCall | None:
    for action in render.actions:
        if action.type is ActionType.CALL_TOOL:
            assert isinstance(action.payload, ToolCall)
            if action.payload.id == pending_id:
                return action.payload
    return None


def _dispatch_context(state: State, call: ToolCall) -> DispatchContext:
    return DispatchContext(
        session_id=state.session_id,
        node_id=state.current_node_id,
        deadline=_wall_clock_deadline(),
        idempotency_key=call.idempotency_key,
        fencing_token=_STEP_FENCE.get(),
    )


def _wall_clock_deadline() -> float | None:
    """The step's deadline (trellis.step_deadline, monotonic) as wall-clock time, the form a
    dispatch context carries to another process: the step's deadline becomes the call's."""
    deadline = current_deadline()
    if deadline is None or deadline.at is None:
        return None
    return time.time() + (deadline.at - time.monotonic())


def _check_id(session_id: str) -> None:
    if not isinstance(session_id, str) or not session_id:
        raise InvalidSessionId("session ID cannot be empty")


T = TypeVar("T")


def _check_start(start_revision: int) -> int:
    if not isinstance(start_revision, int) or start_revision < 0:
        raise ValueError(f"start_revision must be 0 (from now) or a revision, got {start_revision!r}")
    return start_revision


def _event_of(old: State | None, new: State, revision: int) -> SessionEvent:
    """The change from ``old`` to ``new``, or a bookmark when nothing a watcher follows
    changed (the revision still moves)."""
    change = diff(old, new)
    return SessionEvent(revision=revision, diff=replace(change, revision=revision) if change else None)


def _diff_of(event: SessionEvent) -> StateDiff | None:
    return event.diff


def _same_event(event: SessionEvent) -> SessionEvent:
    return event


class SessionWatch(QueueStream[T], Generic[T]):
    """The changes of one session; see SessionManager.watch and watch_events.

    Without a WatchableStore, the manager offers every step of this process as it is
    saved (``_offer``); offers that come before the first iteration wait in ``_early``
    until the watch has read the session (under the session's local lock, so no step
    is between its save and its offer) and knows the revision it starts after. With
    one, the first iteration reads the session and a task relays the store's events.
    ``strict``: a watcher that falls behind ends with BackendUnavailable (it resumes)
    instead of losing changes."""

    def __init__(
        self,
        manager: SessionManager,
        session_id: str,
        start_revision: int,
        pick: Callable[[SessionEvent], T | None],
        *,
        strict: bool,
    ) -> None:
        super().__init__(maxsize=_WATCH_QUEUE_SIZE, on_close=manager._unsubscribe)
        self.session_id = session_id
        self._manager = manager
        self._start = start_revision
        self._pick = pick
        self._strict = strict
        self._dropped = 0
        # Offers before the start: (event, revision it follows). None once started.
        self._early: builtins.list[tuple[SessionEvent, int]] | None = []
        self._starting: asyncio.Future[None] | None = None
        self._relay: asyncio.Task[None] | None = None
        manager._subscribe(self)

    async def __anext__(self) -> T:
        if self._starting is None and not self.closed:
            self._starting = asyncio.ensure_future(self._begin())
        if self._starting is not None and not self._starting.done():
            # Shielded: a reader that times out and reads again finds the start done.
            await asyncio.shield(self._starting)
        return await super().__anext__()

    async def _begin(self) -> None:
        try:
            store = self._manager._watchable
            if store is None:
                await self._begin_local()
            else:
                await self._begin_store(store)
        except Exception as exc:
            self.fail(exc)
            self._release()

    async def _begin_local(self) -> None:
        manager, session_id = self._manager, self.session_id
        async with manager._locks.hold(session_id):
            try:
                state: State | None = await manager._store.load(session_id)
            except SessionNotFound:
                state = None
            early, self._early = self._early or [], None
            # The revision the watch starts after: before the first offer, else the one read.
            after = early[0][1] if early else state.revision if state is not None else 0
            missed = bool(self._start) and self._start <= after
            if not missed and (state is not None or early):
                # Still under the lock: no step can offer a later change before these.
                last = after
                for event, _ in early:
                    self._deliver(event)
                    last = max(last, event.revision)
                if state is not None:
                    self._deliver(SessionEvent(revision=max(last, state.revision)))
        if state is None and not early:
            raise SessionNotFound(session_id)
        if missed:
            # No history here: the changes from start_revision to `after` are gone.
            current = await manager._current(session_id)
            raise WatchRevisionCompacted(session_id, self._start, after + 1, current)

    async def _begin_store(self, store: WatchableStore) -> None:
        state = await self._manager._store.load(self.session_id)  # SessionNotFound
        start = self._start or state.revision + 1
        if not self._start:
            self._deliver(SessionEvent(revision=state.revision))
        if self.closed:
            return  # closed while it was reading
        events = store.watch_session(self.session_id, start)
        self._relay = asyncio.create_task(self._relay_events(events), name="trellis-session-watch")

    async def _relay_events(self, events: StoreEvents) -> None:
        try:
            async for event in events:
                if self.closed:
                    return
                self._deliver(_session_event(event))
        except WatchRevisionCompacted as exc:
            exc.current = await self._manager._current(self.session_id)
            self.fail(exc)
        except Exception as exc:
            self.fail(exc)
        finally:
            await events.aclose()
            self._release()

    def _offer(self, event: SessionEvent, follows: int = 0) -> None:
        """A step of this process (``follows``: the revision it was made on)."""
        if self._early is not None:
            if event.deleted:
                self._early.append((event, follows))
                self.close()  # queues what was offered, then the end: unsubscribed at once
            elif len(self._early) < _WATCH_QUEUE_SIZE:
                self._early.append((event, follows))
            else:
                self._overflow()
            return
        self._deliver(event)

    def _deliver(self, event: SessionEvent) -> None:
        if self._start and event.revision < self._start and not event.bookmark:
            return  # before what a resumed watch asked for
        item = self._pick(event)
        if event.deleted:
            if item is not None:
                self.publish(item)  # the end marker after it needs no room
            self.close()
            return
        if item is None or self.publish(item) or self.closed:
            return
        self._overflow()

    def _overflow(self) -> None:
        if self._strict:
            self.fail(
                BackendUnavailable(
                    f"the watch of session {self.session_id!r} fell {_WATCH_QUEUE_SIZE} events behind; "
                    "resume it from the last revision received + 1"
                )
            )
            self._stop()
            return
        self._dropped += 1
        # One line per overflowing watcher, not one per dropped event.
        if self._dropped == 1:
            self._manager._logger.warning(
                "watcher of session %r is too slow: events are being dropped", self.session_id
            )

    def close(self) -> None:
        """Stop receiving changes (events already queued can still be read)."""
        early, self._early = self._early, None
        for event, _ in early or ():  # offered before the first read: queued, readable
            self._deliver(event)
        self.end()
        self._stop()
        if self._dropped:
            self._manager._logger.info(
                "watcher of session %r closed after %d dropped events", self.session_id, self._dropped
            )
            self._dropped = 0

    def _stop(self) -> None:
        self._release()
        relay, self._relay = self._relay, None
        if relay is not None and relay is not asyncio.current_task():
            relay.cancel()

    async def aclose(self) -> None:
        relay = self._relay
        self.close()
        if relay is not None and relay is not asyncio.current_task():
            try:
                await relay
            except asyncio.CancelledError:
                pass
        await super().aclose()

    async def __aenter__(self) -> SessionWatch[T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _session_event(event: StoreEvent) -> SessionEvent:
    if event.deleted:
        return SessionEvent(revision=event.revision, deleted=True)
    if event.state is None:
        return SessionEvent(revision=event.revision)
    return _event_of(event.previous, event.state, event.revision)
