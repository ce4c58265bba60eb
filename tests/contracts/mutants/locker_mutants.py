"""Broken DistributedLockers: an in-process locker that claims to be distributed, and a
lock-file locker whose locks outlive a crashed holder."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from trellis.adapters.local_locker import LocalLocker
from trellis.contracts.locker import DistributedLockerContract
from trellis.ports.locker import DistributedLocker


class _FileHandle:
    def __init__(self, path: Path, key: str, token: int) -> None:
        self._path, self._key, self._token, self._held = path, key, token, True

    @property
    def key(self) -> str:
        return self._key

    @property
    def token(self) -> int:
        return self._token

    def held(self) -> bool:
        return self._held

    async def unlock(self) -> None:
        if self._held:
            self._held = False
            self._path.unlink(missing_ok=True)


class LockFiles:
    """A lock is a file created exclusively; the mistake: nothing ever expires it."""

    def __init__(self, root: Path) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True)

    async def acquire(self, key: str, ttl: float) -> _FileHandle:
        path = self._root / (hashlib.sha256(key.encode()).hexdigest() + ".lock")
        while True:
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                await asyncio.sleep(0.01)
        counter = path.with_suffix(".token")
        token = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(token))
        return _FileHandle(path, key, token)


class TestBaseline(DistributedLockerContract):
    IN_PROCESS_ONLY = True  # honest: the cross-process tests are skipped, everything else passes

    async def make_locker(self, tmp_path: Path) -> DistributedLocker:
        return LocalLocker()


class TestInProcessOnly(DistributedLockerContract):
    """LocalLocker without the documented opt-out."""

    async def make_locker(self, tmp_path: Path) -> DistributedLocker:
        return LocalLocker()


class TestLockFilesNeverExpire(DistributedLockerContract):
    async def make_locker(self, tmp_path: Path) -> DistributedLocker:
        return LockFiles(tmp_path / "locks")


CAUGHT_BY = {
    "TestInProcessOnly": [
        "test_a_lock_held_by_another_process_keeps_this_one_waiting",
        "test_a_crashed_process_loses_its_lock_after_its_ttl",
    ],
    "TestLockFilesNeverExpire": [
        "test_a_crashed_process_loses_its_lock_after_its_ttl",
        "test_an_expired_holder_loses_the_lock_to_the_next_waiter",
    ],
}
