"""The public DistributedLocker contract, run against LocalLocker, plus its own bookkeeping."""

from __future__ import annotations

import asyncio
from pathlib import Path

from trellis.adapters.local_locker import LocalLocker
from trellis.contracts.locker import DistributedLockerContract
from trellis.ports.locker import DistributedLocker


class TestLocalLockerContract(DistributedLockerContract):
    IN_PROCESS_ONLY = True  # LocalLocker serves one process by design (docs/adapters.md)

    async def make_locker(self, tmp_path: Path) -> DistributedLocker:
        return LocalLocker()


async def test_no_bookkeeping_is_left_once_everyone_is_gone() -> None:
    locker = LocalLocker()

    async def use(key: str) -> None:
        handle = await locker.acquire(key, ttl=30)
        await asyncio.sleep(0)
        await handle.unlock()

    async def give_up(key: str) -> None:
        try:
            async with asyncio.timeout(0.01):
                await locker.acquire(key, ttl=30)
        except TimeoutError:
            pass

    async with asyncio.timeout(20):
        await asyncio.gather(*(use(f"k{n % 50}") for n in range(1000)))
        blocker = await locker.acquire("busy", ttl=30)
        await asyncio.gather(*(give_up("busy") for _ in range(20)))
        await blocker.unlock()
        expiring = await locker.acquire("expiring", ttl=0.05)
        follower = await locker.acquire("expiring", ttl=30)
        await follower.unlock()
    assert not expiring.held()
    assert locker.key_count() == 0


async def test_a_waiter_granted_as_it_is_cancelled_passes_the_lock_on() -> None:
    locker = LocalLocker()
    holder = await locker.acquire("k", ttl=30)
    waiter = asyncio.create_task(locker.acquire("k", ttl=30))
    await asyncio.sleep(0)
    await holder.unlock()  # grants the lock to the waiter...
    waiter.cancel()  # ...which is cancelled before it could run
    async with asyncio.timeout(5):
        try:
            await waiter
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError("the waiter should have been cancelled")
        again = await locker.acquire("k", ttl=30)
    await again.unlock()
    assert locker.key_count() == 0


async def test_every_holder_expires_by_its_own_ttl_whatever_was_granted_meanwhile() -> None:
    # One sweep timer serves every lock: a long lock handed to a waiter when a short one
    # expires must not push back the expiry of another, shorter lock still held.
    locker = LocalLocker()
    medium = await locker.acquire("medium", ttl=0.3)
    short = await locker.acquire("short", ttl=0.05)
    long_waiter = asyncio.create_task(locker.acquire("short", ttl=60))
    async with asyncio.timeout(20):
        follower = await long_waiter  # granted when `short` expired
        assert not short.held() and follower.held()
        taker = await locker.acquire("medium", ttl=60)  # waits only for medium's 0.3 s
    assert not medium.held() and taker.held()
    await follower.unlock()
    await taker.unlock()
    assert locker.key_count() == 0
