"""DistributedLocker: mutual exclusion per key with fencing tokens.

Errors named here are classes of ``trellis.errors``. The contract suite
(trellis.contracts.locker) checks a locker across processes; a locker that only
excludes tasks of one process (LocalLocker) is for a single server process.
"""

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
        expired, lease not lost), answered without a round trip.

        What it guarantees: once it returns False it never returns True again,
        and it returns False after ``unlock`` and after the TTL ran out as this
        process measures it. What it cannot guarantee: that no other process
        holds the lock right now — a process paused (GC, swap, SIGSTOP) between
        ``held()`` and its write may write after its lock expired and another
        holder took over. Stores that can check the fence themselves (the same
        backend as the lock service) do so atomically with the write instead of
        trusting this; any other store must compare ``token`` with the highest
        token it has accepted for the key, in the same transaction as the write,
        to be fenced for real (docs/adapters.md, "Fencing")."""
        ...

    async def unlock(self) -> None:
        """Release the lock if this handle still holds it; harmless when called again,
        after expiry, or after another holder took over (it never frees their lock)."""
        ...


@runtime_checkable
class DistributedLocker(Protocol):
    async def acquire(self, key: str, ttl: float) -> LockHandle:
        """Wait (fairly, first come first served) until ``key`` is free, then hold it.

        ``ttl`` (seconds): a holder that stops renewing (crashed, partitioned)
        loses the lock after at most ``ttl``. To bound the wait, wrap the call in
        ``asyncio.timeout``: cancelling the waiting task leaves no trace of the
        waiter (and never leaves the lock held).

        Raises (trellis.errors): BackendUnavailable when the lock service cannot be
        reached. A ``ttl`` that is not positive is a programming error (ValueError).
        """
        ...
