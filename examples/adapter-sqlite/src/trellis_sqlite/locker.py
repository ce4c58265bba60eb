"""FileLocker: locks shared by the processes of one host, as flock(2) locks on files.

One file per key in ``directory`` (named by a hash of the key). A holder keeps
the file's flock; the kernel drops it when the holder's process dies, so a
crashed holder frees the key at once. The file also holds the key's last
fencing token, so tokens increase across processes. Among the tasks of one
process, waiters queue in a LocalLocker (first come, first served) and only the
head of the queue polls for the flock.

TTL: a live holder that does not unlock loses the lock ``ttl`` seconds after it
got it (a timer closes its file). That timer runs on the holder's event loop, so
a process whose loop is blocked keeps its lock past the TTL; stores fence
against that by token (see trellis_sqlite.store).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from pathlib import Path

from trellis.adapters.local_locker import LocalLocker
from trellis.errors import BackendUnavailable
from trellis.ports.locker import LockHandle

_QUEUE_TTL = 365 * 24 * 3600.0  # the in-process queue never expires a holder: the timer below does
_TOKEN_BYTES = 20


class _FileHandle:
    def __init__(self, key: str, token: int, fd: int, queued: LockHandle, ttl: float) -> None:
        self._key = key
        self._token = token
        self._fd = fd
        self._queued = queued
        self._released = False
        self._timer = asyncio.get_running_loop().call_later(ttl, self._expire)

    @property
    def key(self) -> str:
        return self._key

    @property
    def token(self) -> int:
        return self._token

    def held(self) -> bool:
        return not self._released

    def _release(self) -> bool:
        if self._released:
            return False
        self._released = True
        self._timer.cancel()
        os.close(self._fd)  # drops the flock: another process may take the key now
        return True

    def _expire(self) -> None:
        if self._release():
            asyncio.get_running_loop().create_task(self._queued.unlock())

    async def unlock(self) -> None:
        if self._release():
            await self._queued.unlock()


class FileLocker:
    """A DistributedLocker for the processes of one host, in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str], *, poll: float = 0.01) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._queue = LocalLocker()
        self._poll = poll

    async def acquire(self, key: str, ttl: float) -> _FileHandle:
        if not ttl > 0:
            raise ValueError(f"lock ttl must be positive, got {ttl!r}")
        queued = await self._queue.acquire(key, ttl=_QUEUE_TTL)
        try:
            path = self._directory / (hashlib.sha256(key.encode()).hexdigest() + ".lock")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise BackendUnavailable(f"cannot open lock file {path}: {exc.strerror}") from None
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(self._poll)  # held by another process
                last = os.pread(fd, _TOKEN_BYTES, 0).strip()
                token = int(last or 0) + 1
                os.pwrite(fd, str(token).rjust(_TOKEN_BYTES).encode(), 0)
                return _FileHandle(key, token, fd, queued, ttl)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            await queued.unlock()
            raise
