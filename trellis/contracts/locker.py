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

Two tests hold the lock in another process (``trellis.contracts.locker_peer``
imports this test class there and calls its ``make_locker``): while it holds
the key, this process must wait; when it is killed without unlocking, this
process must get the key within ``CRASH_TTL`` (the TTL the other process asked
for). If ``make_locker`` needs what a fixture prepared (the address of the lock
service), return it from ``peer_attributes``: the other process's instance gets
those attributes before ``make_locker`` runs.

A locker that only excludes tasks of one process (LocalLocker, a test double)
fails these by design; it opts out with ``IN_PROCESS_ONLY = True``, which skips
them with a reason. No locker that several server replicas share may do so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import pickle
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from trellis.ports.locker import DistributedLocker

_BOUND = 15.0
_LONG_TTL = 60.0
_PEER_START = 60.0


class DistributedLockerContract:
    """Subclass with a ``Test`` name and implement ``make_locker``."""

    # Marked explicitly so the suite also runs under pytest-asyncio's strict mode.
    pytestmark = pytest.mark.asyncio

    SHORT_TTL = 0.3
    SETTLE = 0.05
    CRASH_TTL = 1.0
    IN_PROCESS_ONLY: ClassVar[bool] = False
    """True only for a locker that excludes tasks of one process: skips the cross-process tests."""

    def peer_attributes(self) -> dict[str, Any]:
        """Attributes (picklable) set on this class's instance in the other process before
        its ``make_locker`` runs (default: none)."""
        return {}

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

    # --- across processes ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _peer(self, tmp_path: Path, key: str, ttl: float) -> AsyncIterator[_Peer]:
        """Another process holding ``key`` (see trellis.contracts.locker_peer)."""
        if self.IN_PROCESS_ONLY:
            pytest.skip("IN_PROCESS_ONLY: this locker excludes tasks of one process only")
        cls = type(self)
        spec = {
            "module": cls.__module__,
            "qualname": cls.__qualname__,
            "attributes": self.peer_attributes(),
            "tmp_path": str(tmp_path),
            "key": key,
            "ttl": ttl,
        }
        # The test module is importable there the way it is here.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "trellis.contracts.locker_peer",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        peer = _Peer(process)
        try:
            assert process.stdin is not None
            process.stdin.write(base64.b64encode(pickle.dumps(spec)) + b"\n")
            await process.stdin.drain()
            async with asyncio.timeout(_PEER_START):  # a new interpreter on a loaded machine
                await peer.expect("held")
            yield peer
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()

    async def test_a_lock_held_by_another_process_keeps_this_one_waiting(
        self, locker: DistributedLocker, tmp_path: Path
    ) -> None:
        bound = _BOUND + self.CRASH_TTL
        async with self._peer(tmp_path, "k-peer", _LONG_TTL) as peer, asyncio.timeout(bound):
            waiter = asyncio.create_task(locker.acquire("k-peer", ttl=_LONG_TTL))
            try:
                assert await self._still_waiting(waiter), (
                    "this process got a lock another process holds: the locker is in-process only"
                )
            finally:
                if waiter.done():
                    await (await waiter).unlock()
            await peer.release()
            handle = await waiter
            assert handle.held()
            assert handle.token > peer.token
            await handle.unlock()

    async def test_a_crashed_process_loses_its_lock_after_its_ttl(
        self, locker: DistributedLocker, tmp_path: Path
    ) -> None:
        bound = _BOUND + self.CRASH_TTL
        async with self._peer(tmp_path, "k-crash", self.CRASH_TTL) as peer, asyncio.timeout(bound):
            waiter = asyncio.create_task(locker.acquire("k-crash", ttl=_LONG_TTL))
            try:
                assert await self._still_waiting(waiter), (
                    "this process got a lock another process holds: the locker is in-process only"
                )
            finally:
                if waiter.done():
                    await (await waiter).unlock()
            peer.kill()  # no unlock, no cleanup: the lock must expire on its own
            handle = await waiter
            assert handle.held()
            assert handle.token > peer.token
            await handle.unlock()


class _Peer:
    """The other process of a cross-process test, holding its lock until released or killed."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.token = 0

    async def expect(self, word: str) -> None:
        assert self.process.stdout is not None and self.process.stderr is not None
        line = (await self.process.stdout.readline()).decode()
        if not line.startswith(word):
            errors = (await self.process.stderr.read()).decode()
            pytest.fail(f"the locker's other process did not report {word!r}: {line!r}\n{errors[-3000:]}")
        if word == "held":
            self.token = int(line.split()[1])

    async def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"release\n")
        await self.process.stdin.drain()
        await self.expect("released")

    def kill(self) -> None:
        self.process.kill()
