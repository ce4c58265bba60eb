"""LocalLocker: the DistributedLocker port inside one process (asyncio).

Fair: waiters of a key are served first come, first served. A holder that
never unlocks loses the lock ``ttl`` seconds after it got it; the next waiter
then gets it and the old handle reports ``held() == False``, so a store
refuses its late write (fencing). Tokens come from one counter for the whole
locker, so they increase per key even after a key's bookkeeping was dropped.
A key's bookkeeping lives only while the key has a holder or waiters.

Expiry runs on ONE timer for the whole locker, armed for the earliest deadline
of any holder, rather than a timer armed and cancelled per lock: with one TTL
for every lock, a new holder's deadline is never the earliest, so the common
acquire-then-unlock costs no timer work at all. When the timer fires it expires
every holder whose deadline passed (handing each key to its next waiter) and
re-arms for the earliest deadline left.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque


class _LocalHandle:
    __slots__ = ("_deadline", "_key", "_locker", "_released", "_token")

    def __init__(self, locker: LocalLocker, key: str, token: int, deadline: float) -> None:
        self._locker = locker
        self._key = key
        self._token = token
        self._released = False
        self._deadline = deadline  # loop time at which the lock expires

    @property
    def key(self) -> str:
        return self._key

    @property
    def token(self) -> int:
        return self._token

    def held(self) -> bool:
        return not self._released

    async def unlock(self) -> None:
        self._locker._release(self)

    def __repr__(self) -> str:
        return f"<LockHandle key={self._key!r} token={self._token} held={self.held()}>"


class _KeyState:
    __slots__ = ("holder", "waiters")

    def __init__(self) -> None:
        self.holder: _LocalHandle | None = None
        # Each waiter with the ttl it asked for: the grant starts its clock.
        self.waiters: deque[tuple[asyncio.Future[_LocalHandle], float]] = deque()


class LocalLocker:
    """Per-key locks with TTL and fencing tokens for tasks of one event loop."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyState] = {}
        self._tokens = itertools.count(1)
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0
        self._sweep_loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self, key: str, ttl: float) -> _LocalHandle:
        if not ttl > 0:
            raise ValueError(f"lock ttl must be positive, got {ttl!r}")
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
        if state.holder is None and not state.waiters:
            return self._grant(key, state, ttl)
        waiter: asyncio.Future[_LocalHandle] = asyncio.get_running_loop().create_future()
        entry = (waiter, ttl)
        state.waiters.append(entry)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted in the same instant the waiter was cancelled: pass it on.
                self._release(waiter.result())
            else:
                waiter.cancel()
                self._drop_waiter(key, entry)
            raise

    def _grant(self, key: str, state: _KeyState, ttl: float) -> _LocalHandle:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ttl
        handle = _LocalHandle(self, key, next(self._tokens), deadline)
        state.holder = handle
        if self._sweep is None or deadline < self._sweep_at or loop is not self._sweep_loop:
            self._arm(loop, deadline)
        return handle

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep = loop.call_at(when, self._expire_due)
        self._sweep_at = when
        self._sweep_loop = loop

    def _expire_due(self) -> None:
        """The sweep timer: expire every holder whose deadline passed, re-arm for the next."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = [s.holder for s in self._keys.values() if s.holder is not None and s.holder._deadline <= now]
        for handle in due:
            self._release(handle)  # may grant the key to a waiter, whose deadline counts below
        # Re-armed for the earliest holder, whatever a grant above armed for its own deadline.
        deadlines = [s.holder._deadline for s in self._keys.values() if s.holder is not None]
        if deadlines:
            self._arm(loop, min(deadlines))
        elif self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _release(self, handle: _LocalHandle) -> None:
        if handle._released:
            return  # second unlock, or unlock after expiry: harmless
        handle._released = True
        state = self._keys.get(handle.key)
        if state is None or state.holder is not handle:
            return
        state.holder = None
        while state.waiters:
            waiter, ttl = state.waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._grant(handle.key, state, ttl))
                return
        del self._keys[handle.key]

    def _drop_waiter(self, key: str, entry: tuple[asyncio.Future[_LocalHandle], float]) -> None:
        state = self._keys.get(key)
        if state is None:
            return
        try:
            state.waiters.remove(entry)
        except ValueError:
            pass
        if state.holder is None and not state.waiters:
            del self._keys[key]

    def key_count(self) -> int:
        """Keys with a holder or waiters right now (0 when idle: nothing leaks)."""
        return len(self._keys)
