"""Group commit: concurrent writes of different sessions in one etcd transaction.

A write that finds none of the store's transactions in flight goes alone, at
once (no added latency when the load is light). Writes that arrive while one is
in flight wait for it and then go together, as ONE transaction whose compares
are all of theirs and whose success branch is all of their puts: etcd spends
far less per write in a batch than per transaction (one raft entry, one
fsync, one apply).

A transaction is all or nothing, so one write whose compare fails fails the
whole batch. Then nothing was written, and each write of the batch is told so
and is re-issued alone by its caller with its own failure reads: one session's
refused step never fails its neighbours' steps. A batch holds at most one write
per key.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient

MAX_WRITES: Final = 32
"""Writes per batch: each brings two compares, and etcd's default --max-txn-ops is 128."""


class _Write:
    __slots__ = ("compares", "future", "key", "put", "size")

    def __init__(self, key: bytes, compares: list[Any], put: Any, size: int) -> None:
        self.key = key
        self.compares = compares
        self.put = put
        self.size = size
        self.future: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()


class GroupCommit:
    """Batches a store's conditional writes. Callers that send a transaction of their own
    bracket it with ``begin``/``end`` so writes arriving meanwhile wait for it and batch."""

    def __init__(self, client: EtcdClient, max_bytes: int) -> None:
        self._client = client
        self._max_bytes = max_bytes
        self._waiting: list[_Write] = []
        self._in_flight = 0
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> bool:
        """No transaction of this store is in flight: a write should go alone, now."""
        return self._in_flight == 0

    def begin(self) -> None:
        self._in_flight += 1

    def end(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._waiting:
            self._send_next()

    async def join(self, key: bytes, compares: list[Any], put: Any, size: int) -> tuple[int, bool]:
        """Wait for the next batch and commit with it. Returns (revision, False) when the
        batch was written; (0, maybe) when it was not — the caller re-issues the write
        alone, and ``maybe`` says the batch's answer was lost after a retry, so an earlier
        attempt of it may have landed. Raises what the transaction raised."""
        write = _Write(key, compares, put, size)
        self._waiting.append(write)
        try:
            return await write.future
        except asyncio.CancelledError:
            if write in self._waiting:
                self._waiting.remove(write)  # not sent yet: nothing to undo
            raise

    def _send_next(self) -> None:
        batch: list[_Write] = []
        keys: set[bytes] = set()
        size = 0
        later: list[_Write] = []
        for write in self._waiting:
            full = len(batch) >= MAX_WRITES or (batch and size + write.size > self._max_bytes)
            if full or write.key in keys:
                later.append(write)
                continue
            batch.append(write)
            keys.add(write.key)
            size += write.size
        self._waiting = later
        self._in_flight += 1
        task = asyncio.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Write]) -> None:
        try:
            request = rpc.TxnRequest(
                compare=[compare for write in batch for compare in write.compares],
                success=[write.put for write in batch],
            )
            response, attempts = await self._client.call_counting("Txn", request)
        except BaseException as exc:
            for write in batch:
                if not write.future.done():
                    write.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            outcome = (int(response.header.revision), False) if response.succeeded else (0, attempts > 1)
            for write in batch:
                if not write.future.done():
                    write.future.set_result(outcome)
        finally:
            self.end()
