"""DistributedLocker: mutual exclusion per key with fencing tokens."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class LockHandle(Protocol):
    """Proof of holding a lock. ``unlock`` must be called (once is enough: a
    second call is harmless). ``token`` is the fencing token: for one key, a
    later holder always has a larger token than an earlier one."""

    @property
    def key(self) -> str: ...

    @property
    def token(self) -> int: ...

    def held(self) -> bool:
        """This process's belief that the lock is still held (not released, not
        expired, lease not lost). Stores that can check the fence themselves do
        so atomically with the write instead of trusting this."""
        ...

    async def unlock(self) -> None: ...


@runtime_checkable
class DistributedLocker(Protocol):
    async def acquire(self, key: str, ttl: float) -> LockHandle:
        """Wait (fairly, first come first served) until ``key`` is free, then hold it.

        ``ttl`` (seconds): a holder that stops renewing (crashed, partitioned)
        loses the lock after at most ``ttl``. To bound the wait, wrap the call in
        ``asyncio.timeout``: cancelling the waiting task leaves no trace of the
        waiter (and never leaves the lock held). Raises
        BackendUnavailable when the lock service cannot be reached.
        """
        ...
