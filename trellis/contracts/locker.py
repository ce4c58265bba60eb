"""The DistributedLocker contract: every locker (local, etcd) passes it.

Run it against your locker in a few lines::

    from trellis.contracts.locker import DistributedLockerContract

    class TestMyLocker(DistributedLockerContract):
        async def make_locker(self, tmp_path):
            return MyLocker(...)

Waits are bounded with ``asyncio.timeout``; nothing here asserts how long an
operation took. Two knobs for slower backends: ``SHORT_TTL`` (seconds, the TTL
used to watch a lock expire) and ``SETTLE`` (seconds a new waiter is given to
queue up before the next one starts, for the FIFO test).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from trellis.ports.locker import DistributedLocker

_BOUND = 15.0
_LONG_TTL = 60.0


class DistributedLockerContract:
    """Subclass with a ``Test`` name and implement ``make_locker``."""

    # Marked explicitly so the suite also runs under pytest-asyncio's strict mode.
    pytestmark = pytest.mark.asyncio

    SHORT_TTL = 0.3
    SETTLE = 0.05

    async def make_locker(self, tmp_path: Path) -> DistributedLocker:
        raise NotImplementedError("override make_locker to return the locker under test")

    async def close_locker(self, locker: DistributedLocker) -> None:
        """Release what make_locker opened (default: nothing)."""

    @pytest_asyncio.fixture
    async def locker(self, tmp_path: Path) -> AsyncIterator[DistributedLocker]:
        made = await self.make_locker(tmp_path)
        try:
            yield made
        finally:
            await self.close_locker(made)

    async def _still_waiting(self, task: asyncio.Task[object]) -> bool:
        """True when ``task`` has not finished after SETTLE (a negative check can only pass by waiting)."""
        await asyncio.sleep(self.SETTLE)
        return not task.done()

    async def test_only_one_holder_at_a_time(self, locker: DistributedLocker) -> None:
        counter = 0
        inside = 0
        most_inside = 0

        async def increment() -> None:
            nonlocal counter, inside, most_inside
            handle = await locker.acquire("k-mutex", ttl=_LONG_TTL)
            try:
                inside += 1
                most_inside = max(most_inside, inside)
                seen = counter
                for _ in range(3):
                    await asyncio.sleep(0)  # invite other tasks to run inside the critical section
                counter = seen + 1
                inside -= 1
            finally:
                await handle.unlock()

        async with asyncio.timeout(_BOUND):
            await asyncio.gather(*(increment() for _ in range(20)))
        assert counter == 20
        assert most_inside == 1

    async def test_an_expired_holder_loses_the_lock_to_the_next_waiter(
        self, locker: DistributedLocker
    ) -> None:
        async with asyncio.timeout(_BOUND):
            stale = await locker.acquire("k-ttl", ttl=self.SHORT_TTL)
            # This holder never unlocks: the next acquire must succeed once its ttl runs out.
            fresh = await locker.acquire("k-ttl", ttl=_LONG_TTL)
            assert not stale.held()
            assert fresh.held()
            assert fresh.token > stale.token
            # The stale holder waking up and unlocking must not free the new holder's lock.
            await stale.unlock()
            assert fresh.held()
            third = asyncio.create_task(locker.acquire("k-ttl", ttl=_LONG_TTL))
            assert await self._still_waiting(third)
            await fresh.unlock()
            handle = await third
            await handle.unlock()

    async def test_a_cancelled_waiter_leaves_no_trace(self, locker: DistributedLocker) -> None:
        async with asyncio.timeout(_BOUND):
            holder = await locker.acquire("k-cancel", ttl=_LONG_TTL)
            waiter = asyncio.create_task(locker.acquire("k-cancel", ttl=_LONG_TTL))
            assert await self._still_waiting(waiter)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(self.SETTLE):
                    await locker.acquire("k-cancel", ttl=_LONG_TTL)
            await holder.unlock()
            # Neither cancelled waiter may hold the lock now: a newcomer gets it.
            newcomer = await locker.acquire("k-cancel", ttl=_LONG_TTL)
            assert newcomer.held()
            await newcomer.unlock()

    async def test_unlocking_twice_is_harmless(self, locker: DistributedLocker) -> None:
        async with asyncio.timeout(_BOUND):
            first = await locker.acquire("k-twice", ttl=_LONG_TTL)
            await first.unlock()
            await first.unlock()
            assert not first.held()
            second = await locker.acquire("k-twice", ttl=_LONG_TTL)
            await first.unlock()  # a late third unlock must not release someone else's lock
            assert second.held()
            waiter = asyncio.create_task(locker.acquire("k-twice", ttl=_LONG_TTL))
            assert await self._still_waiting(waiter)
            await second.unlock()
            third = await waiter
            await third.unlock()

    async def test_different_keys_do_not_block_each_other(self, locker: DistributedLocker) -> None:
        async with asyncio.timeout(_BOUND):
            a = await locker.acquire("k-a", ttl=_LONG_TTL)
            b = await locker.acquire("k-b", ttl=_LONG_TTL)
            assert a.held() and b.held()
            assert (a.key, b.key) == ("k-a", "k-b")
            await a.unlock()
            await b.unlock()

    async def test_fencing_tokens_increase(self, locker: DistributedLocker) -> None:
        tokens = []
        async with asyncio.timeout(_BOUND):
            for _ in range(5):
                handle = await locker.acquire("k-token", ttl=_LONG_TTL)
                tokens.append(handle.token)
                await handle.unlock()
        assert all(later > earlier for earlier, later in itertools.pairwise(tokens))

    async def test_waiters_are_served_first_come_first_served(self, locker: DistributedLocker) -> None:
        order: list[int] = []

        async def wait_turn(n: int) -> None:
            handle = await locker.acquire("k-fifo", ttl=_LONG_TTL)
            order.append(n)
            await asyncio.sleep(0)
            await handle.unlock()

        async with asyncio.timeout(_BOUND):
            holder = await locker.acquire("k-fifo", ttl=_LONG_TTL)
            tasks = []
            for n in range(5):
                tasks.append(asyncio.create_task(wait_turn(n)))
                await asyncio.sleep(self.SETTLE)  # let waiter n queue up before n+1 arrives
            await holder.unlock()
            await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
