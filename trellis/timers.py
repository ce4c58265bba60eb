"""Durable timers: a node's ``timeout:`` fires on the server (issue 11, docs/engine.md, "Signals and
timeouts").

When a saved step leaves a session waiting for input at a node whose input request
has a timeout, the session is armed with a ``Timer``: (session, revision it was
saved at, node, due time). When the timer is due, the ``timeout`` signal is applied
as an ordinary durable step (the node's ``on_timeout``, else the entry node's
default) — but only while the session is still at the revision the timer was armed
for. That one compare is what makes a timer fire at most once whoever fires it and
however often: the firing step is saved conditioned on the revision it loaded, so of
two replicas firing the same timer one step lands and the other sees the session
moved; an answer that arrived first moved the session too, which cancels the timer
(a late fire is a no-op, and the stale record is dropped then).

Where timers wait is a ``TimerQueue``: in etcd (trellis.adapters.etcd.timers) they
outlive any replica; in one process ``MemoryTimerQueue`` holds them and
``TimerService.start`` rebuilds it from the stored sessions, re-arming each waiting
session with its full timeout from the restart.

Claiming is how a due timer goes to one replica at a time: ``claim_due`` moves each
timer it returns to ``now + claim_ttl``, so if the claimant dies before ``done`` the
timer becomes due again and another replica fires it (still at most once: see above).
Due times are wall-clock (``time.time()``): replicas need synchronised clocks, as
any deployment with TLS already does; skew only makes a fire early or late by it.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Protocol, runtime_checkable

from trellis.domain import Status, StepResult
from trellis.errors import SessionNotFound, TrellisError, UnhandledSignal
from trellis.ports.store import StateStore
from trellis.sessions import SessionManager

TIMEOUT_SIGNAL: Final = "timeout"
DEFAULT_POLL_INTERVAL: Final = 0.2
DEFAULT_CLAIM_TTL: Final = 10.0
_CLAIM_BATCH: Final = 256
"""Due timers claimed per round; more are claimed at once in the next round."""
_FIRING: Final = 64
"""Timer steps run at once by one service (each is a durable step)."""


@dataclass(frozen=True, slots=True)
class Timer:
    """One armed timeout. ``due`` is wall-clock seconds; ``token`` is the queue's own
    handle of a claimed timer (e.g. its etcd key), empty before it is claimed."""

    session_id: str
    revision: int
    node_id: str
    due: float
    token: str = ""


@runtime_checkable
class TimerQueue(Protocol):
    """Where armed timers wait until they are due."""

    durable: bool
    """True when armed timers outlive the process (no rebuild from the store at start)."""

    def stage(self, session_id: str, timer: Timer | None) -> None:
        """The timer the step about to be saved arms (None: it arms none), for a queue that
        writes timers in the same transaction as the save; its ``revision`` is not known
        yet (0). Called right before every save of a step."""
        ...

    async def arm(self, timer: Timer) -> None:
        """After the step was saved (``timer.revision`` set): store ``timer``, unless
        ``stage`` had it written with the save already. Done before the reply is sent."""
        ...

    async def claim_due(self, now: float, limit: int, claim_ttl: float) -> list[Timer]:
        """Up to ``limit`` timers due at ``now``, each claimed by this caller: none is
        returned to another claimant until ``claim_ttl`` seconds have passed."""
        ...

    async def done(self, timer: Timer) -> None:
        """Forget a claimed timer (fired, or found moot)."""
        ...

    def next_due(self) -> float | None:
        """The earliest due time this queue knows without asking its backend (a hint to
        sleep until; None: nothing known, poll)."""
        ...


class MemoryTimerQueue:
    """Timers in this process only: a heap by due time. Not durable — a restart loses
    them and ``TimerService.start`` rebuilds them from the store."""

    durable = False

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self._claimed: dict[str, Timer] = {}
        self._armed = self._finished = 0

    def pending(self) -> int:
        """Timers armed and not yet done with (fired, or found moot)."""
        return self._armed - self._finished

    def stage(self, session_id: str, timer: Timer | None) -> None:
        pass  # armed after the save (a restart re-arms from the store anyway)

    async def arm(self, timer: Timer) -> None:
        self._armed += 1
        self._push(timer.due, timer)

    def _push(self, when: float, timer: Timer) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, timer))

    async def claim_due(self, now: float, limit: int, claim_ttl: float) -> list[Timer]:
        claimed: list[Timer] = []
        while self._heap and self._heap[0][0] <= now and len(claimed) < limit:
            _, seq, timer = heapq.heappop(self._heap)
            if timer.token and self._claimed.pop(timer.token, None) is None:
                continue  # a claim already done with
            timer = replace(timer, token=f"claim-{seq}")
            self._claimed[timer.token] = timer
            # Until ``done``, it comes back after the claim: a fire that failed is retried.
            self._push(now + claim_ttl, timer)
            claimed.append(timer)
        return claimed

    async def done(self, timer: Timer) -> None:
        if self._claimed.pop(timer.token, None) is not None:
            self._finished += 1

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None


def timer_for(result: StepResult, now: float) -> Timer | None:
    """The timer a saved step arms: its session waits for input at a node whose input
    request has a timeout (no input request, no timer: docs/engine.md)."""
    state = result.state
    if state.status is not Status.ACTIVE or result.render.terminal:
        return None
    request = result.render.input_request()
    if request is None or request.timeout <= 0:
        return None
    return Timer(state.session_id, state.revision, state.current_node_id, now + request.timeout)


Fired = Callable[[Timer, StepResult | None, float], None]
"""Told about every timer handled: its step's result (None: it was moot — the session
had moved on or is gone) and when it was handled (wall clock)."""


class TimerService:
    """Arms timers after saved steps and fires them when due, over one ``TimerQueue``.

    ``poll_interval``: longest sleep between looks at the queue (a durable queue is
    shared with other replicas, whose timers this one learns of only by looking);
    ``claim_ttl``: how long a claimed timer is this replica's before another may fire
    it (a fire that takes longer is still applied at most once)."""

    def __init__(
        self,
        sessions: SessionManager,
        queue: TimerQueue,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        claim_ttl: float = DEFAULT_CLAIM_TTL,
        logger: logging.Logger | None = None,
        on_fired: Fired | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"timer poll interval must be positive, got {poll_interval}")
        if claim_ttl <= 0:
            raise ValueError(f"timer claim TTL must be positive, got {claim_ttl}")
        self._sessions = sessions
        self.queue = queue
        self._poll = poll_interval
        self._claim_ttl = claim_ttl
        self._log = logger or logging.getLogger("trellis.timers")
        self._on_fired = on_fired
        self._clock = clock
        self._wake = asyncio.Event()
        self._firing = asyncio.Semaphore(_FIRING)
        sessions.on_saving(self.before_save)
        sessions.on_saved(self.after_step)

    def before_save(self, result: StepResult) -> None:
        """The session manager's hook right before a step is saved: stage its timer."""
        self.queue.stage(result.state.session_id, timer_for(result, self._clock()))

    async def after_step(self, result: StepResult) -> None:
        """The session manager's hook after every saved step: arm what it waits for."""
        timer = timer_for(result, self._clock())
        if timer is None:
            return
        await self.queue.arm(timer)
        if timer.due - self._clock() < self._poll:
            self._wake.set()  # the loop may be sleeping past this one's due time

    async def rebuild(self, store: StateStore) -> int:
        """Arm every stored session that waits on a timeout (a queue that is not durable
        starts empty): each gets its full timeout from now. Returns how many were armed."""
        armed = 0
        token = ""
        while True:
            page = await store.list(page_size=500, page_token=token)
            for session_id in page.session_ids:
                try:
                    result = await self._sessions.get(session_id)
                except TrellisError as exc:
                    self._log.warning("timers: cannot read session %r to re-arm it: %s", session_id, exc)
                    continue
                timer = timer_for(result, self._clock())
                if timer is not None:
                    await self.queue.arm(timer)
                    armed += 1
            if not page.next_page_token:
                return armed
            token = page.next_page_token

    async def run(self) -> None:
        """Fire due timers until cancelled."""
        firing: set[asyncio.Task[None]] = set()
        try:
            while True:
                now = self._clock()
                try:
                    due = await self.queue.claim_due(now, _CLAIM_BATCH, self._claim_ttl)
                except TrellisError as exc:
                    self._log.warning("timers: cannot read due timers: %s", exc)
                    due = []
                except Exception:
                    # Never end the loop: a stopped loop would stop every timeout silently.
                    self._log.exception("timers: reading due timers failed")
                    due = []
                for timer in due:
                    task = asyncio.create_task(self._fire(timer))
                    firing.add(task)
                    task.add_done_callback(firing.discard)
                if len(due) >= _CLAIM_BATCH:
                    await asyncio.sleep(0)  # more are due: claim them next, after a yield
                    continue
                await self._sleep(now)
        finally:
            for task in firing:
                task.cancel()
            await asyncio.gather(*firing, return_exceptions=True)

    async def _sleep(self, now: float) -> None:
        delay = self._poll
        hint = self.queue.next_due()
        if hint is not None:
            delay = min(delay, max(hint - now, 0.0))
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _fire(self, timer: Timer) -> None:
        async with self._firing:
            try:
                result = await self._sessions.fire_signal(timer.session_id, TIMEOUT_SIGNAL, timer.revision)
            except SessionNotFound:
                result = None  # deleted meanwhile: nothing to time out
            except UnhandledSignal as exc:
                # Like a terminal runner that stops with an error: nothing is applied.
                self._log.warning(
                    "timer of session %r at node %r: %s", timer.session_id, timer.node_id, exc.message
                )
                result = None
            except TrellisError as exc:
                # Kept claimed: it is due again when the claim runs out, and retried.
                self._log.warning("timer of session %r not fired yet: %s", timer.session_id, exc)
                return
            except Exception:
                self._log.exception(
                    "timer of session %r failed; retried when its claim runs out", timer.session_id
                )
                return
            try:
                await self.queue.done(timer)
            except TrellisError as exc:
                self._log.warning("timer of session %r fired; dropping it failed: %s", timer.session_id, exc)
            if self._on_fired is not None:
                self._on_fired(timer, result, self._clock())
