"""Group commit: concurrent writes of different sessions in one etcd transaction.

Writes queue, and the queue is sent at the end of the current event-loop
iteration — or, while one of the store's transactions is in flight, once it is
answered — as ONE transaction whose compares are all of theirs and whose
success branch is all of their puts: etcd spends far less per write in a batch
than per transaction (one raft entry, one WAL write, one apply), and so does
this process (one gRPC call). A write alone in its batch goes as its caller's
own transaction, with its failure reads, at once.

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
"""Writes per batch: each brings two compares and one or two puts (its session, and the
durable timer it arms), and etcd's default --max-txn-ops is 128."""


class _Write:
    __slots__ = ("compares", "future", "key", "puts", "size")

    def __init__(self, key: bytes, compares: list[Any], puts: list[Any], size: int) -> None:
        self.key = key
        self.compares = compares
        self.puts = puts
        self.size = size
        self.future: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()


class GroupCommit:
    """Batches a store's conditional writes. A caller that sends a transaction of its own
    brackets it with ``begin``/``end``, so that writes arriving meanwhile wait for it."""

    def __init__(self, client: EtcdClient, max_bytes: int) -> None:
        self._client = client
        self._max_bytes = max_bytes
        self._waiting: list[_Write] = []
        self._in_flight = 0
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    def begin(self) -> None:
        self._in_flight += 1

    def end(self) -> None:
        self._in_flight -= 1
        self._schedule()

    async def join(self, key: bytes, compares: list[Any], puts: list[Any], size: int) -> tuple[int, bool]:
        """Commit with the next batch. Returns (revision, False) when the batch was
        written; (0, maybe) when the caller is to send the write alone: it was alone in
        its batch, or the batch was not written — then ``maybe`` says the batch's answer
        was lost after a retry, so an earlier attempt of it may have landed. Raises what
        the batch's transaction raised."""
        write = _Write(key, compares, puts, size)
        self._waiting.append(write)
        self._schedule()
        try:
            return await write.future
        except asyncio.CancelledError:
            if write in self._waiting:
                self._waiting.remove(write)  # not sent yet: nothing to undo
            raise

    def _schedule(self) -> None:
        """Flush at the end of this loop iteration, so every write the iteration produced
        joins; not while a transaction is in flight (its end schedules again)."""
        if self._waiting and not self._flush_scheduled and self._in_flight == 0:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._waiting or self._in_flight:
            return
        if len(self._waiting) == 1:
            write = self._waiting.pop()
            if not write.future.done():
                write.future.set_result((0, False))  # alone: its caller sends it
            return
        self._send_next()

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
                success=[put for write in batch for put in write.puts],
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
