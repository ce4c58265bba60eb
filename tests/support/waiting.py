"""Bounded waits for an event (never a wall-clock assertion: the bound is generous and
only turns a hang into a failure that says what was awaited)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Check = Callable[[], bool | Awaitable[bool]]


async def eventually(check: Check, what: str, within: float = 30.0, interval: float = 0.02) -> float:
    """Poll ``check`` until it is true; returns the seconds it took. AssertionError naming
    ``what`` if it is still false after ``within`` seconds."""
    started = time.monotonic()
    for _ in range(int(within / interval) + 1):
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"not within {within:g} s: {what}")


def eventually_sync(
    check: Callable[[], bool], what: str, within: float = 30.0, interval: float = 0.02
) -> None:
    """``eventually`` for synchronous tests (a check that needs no event loop)."""
    started = time.monotonic()
    for _ in range(int(within / interval) + 1):
        if check():
            return
        if time.monotonic() - started > within:
            break
        time.sleep(interval)
    raise AssertionError(f"not within {within:g} s: {what}")
