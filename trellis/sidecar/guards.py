"""What keeps a sidecar's tools safe from their callers: one run per idempotency key, and
no run for a caller whose session lock has passed to someone else.

Both tables are bounded (oldest entries go first) and live in the sidecar's memory: a
sidecar that restarts forgets them (a tool killed mid-run had not finished, so its retry
runs it once). Fencing: for one session, a later lock holder always has a larger token
(the etcd lock's revision); a call carrying a token lower than the largest seen for its
session comes from a holder that has lost the lock.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from trellis.domain import ToolResult
from trellis.errors import LockLost

DEFAULT_MAX_KEYS = 10_000
DEFAULT_TTL = 600.0
DEFAULT_MAX_SESSIONS = 100_000


class _Run:
    __slots__ = ("expires", "task", "waiters")

    def __init__(self, task: asyncio.Task[ToolResult]) -> None:
        self.task = task
        self.waiters = 0
        self.expires = 0.0  # set when the run finishes


class IdempotencyCache:
    """Runs ``work`` once per key: a call with a key that is running waits for that run, one
    whose run finished (within ``ttl``) gets its result again. A failed result (is_error) is
    not kept, so that a retry of a failed attempt runs the tool again."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, ttl: float = DEFAULT_TTL) -> None:
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._max_keys = max_keys
        self._ttl = ttl
        self.hits = 0

    def __len__(self) -> int:
        return len(self._runs)

    async def run(self, key: str, work: Callable[[], Awaitable[ToolResult]]) -> ToolResult:
        if not key:
            return await work()
        self._expire()
        run = self._runs.get(key)
        if run is None:
            run = _Run(asyncio.ensure_future(work()))
            self._runs[key] = run
            run.task.add_done_callback(functools.partial(self._finished, key))
            self._trim()
        else:
            self.hits += 1
        run.waiters += 1
        try:
            return await asyncio.shield(run.task)
        except asyncio.CancelledError:
            # The caller gave up: when nobody else waits, the tool is cancelled too and a
            # retry runs it afresh.
            if not run.task.done() and run.waiters == 1:
                run.task.cancel()
                if self._runs.get(key) is run:
                    del self._runs[key]
            raise
        finally:
            run.waiters -= 1

    def _finished(self, key: str, task: asyncio.Task[ToolResult]) -> None:
        run = self._runs.get(key)
        if run is None or run.task is not task:
            return
        if task.cancelled() or task.exception() is not None or task.result().is_error:
            del self._runs[key]
            return
        run.expires = time.monotonic() + self._ttl
        self._runs.move_to_end(key)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._runs:
            key, run = next(iter(self._runs.items()))
            if not run.task.done() or run.expires > now:
                return
            del self._runs[key]

    def _trim(self) -> None:
        # Only finished runs are forgotten: a running one must keep absorbing its retries.
        while len(self._runs) > self._max_keys:
            victim = next((k for k, r in self._runs.items() if r.task.done()), None)
            if victim is None:
                return
            del self._runs[victim]


class FenceBook:
    """The largest fencing token seen per session."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        self._tokens: OrderedDict[str, int] = OrderedDict()
        self._max_sessions = max_sessions

    def admit(self, session_id: str, token: int) -> None:
        """Record ``token`` for ``session_id``; raise LockLost when a larger one was seen.
        Token 0 (a caller without a lock) is never checked."""
        if token <= 0 or not session_id:
            return
        seen = self._tokens.get(session_id, 0)
        if token < seen:
            raise LockLost(
                f"stale fencing token {token} for session {session_id!r}: a later lock holder "
                f"(token {seen}) has called this sidecar; the call was refused",
            )
        self._tokens[session_id] = token
        self._tokens.move_to_end(session_id)
        while len(self._tokens) > self._max_sessions:
            self._tokens.popitem(last=False)
