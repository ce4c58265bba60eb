"""The caller's deadline of the step in progress, visible to core code.

The server bounds each call with ``asyncio.timeout``, but a timeout only acts when
the step awaits something: evaluation that runs without yielding (a long
template, a CEL condition) can finish after the caller has given up, and its
result must then not be saved. So the server also records the deadline here
(``step_deadline``), the session manager calls ``check_deadline`` just before it
saves, and evaluation that runs off the event loop (``run_off_loop``) checks
``StepDeadline.passed`` as it goes and stops once the step is over.

Times are ``time.monotonic()``, the clock of asyncio's event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

_T = TypeVar("_T")


class StepDeadline:
    """When the step must be done (``at``, None for never) and whether it is already
    over for whoever waited on it (``abandoned``)."""

    __slots__ = ("abandoned", "at")

    def __init__(self, at: float | None) -> None:
        self.at = at
        self.abandoned = False

    def passed(self) -> bool:
        return self.abandoned or (self.at is not None and time.monotonic() >= self.at)


_CURRENT: contextvars.ContextVar[StepDeadline | None] = contextvars.ContextVar(
    "trellis_step_deadline", default=None
)


def current_deadline() -> StepDeadline | None:
    return _CURRENT.get()


@contextmanager
def step_deadline(seconds: float | None) -> Iterator[StepDeadline]:
    """Run the body as a step the caller wants done within ``seconds`` (None: no deadline)."""
    deadline = StepDeadline(None if seconds is None else time.monotonic() + seconds)
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        deadline.abandoned = True  # whatever still evaluates for this step stops
        _CURRENT.reset(token)


def check_deadline() -> None:
    """Raise TimeoutError when the current step's caller has given up (its deadline
    passed), so the step is abandoned instead of saved."""
    deadline = _CURRENT.get()
    if deadline is not None and deadline.passed():
        raise TimeoutError("the step did not finish before the caller's deadline; nothing was saved")


# Evaluation gets its own threads so that a heavy render never waits behind (or
# delays) the file and directory I/O that uses asyncio's default executor.
_POOL_SIZE = 4
_pool: ThreadPoolExecutor | None = None


def _evaluation_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="trellis-eval")
    return _pool


async def run_off_loop(function: Callable[..., _T], *args: object) -> _T:
    """``function(*args)`` in an evaluation thread, so the event loop keeps serving.

    The thread sees a deadline of its own (the step's, if any) that is marked
    abandoned as soon as this await ends, e.g. when the step is cancelled: code
    that checks ``current_deadline().passed()`` as it goes then stops early
    instead of running on for nobody.
    """
    parent = _CURRENT.get()
    own = StepDeadline(parent.at if parent is not None else None)
    context = contextvars.copy_context()
    context.run(_CURRENT.set, own)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_evaluation_pool(), context.run, function, *args)
    finally:
        own.abandoned = True
