"""One etcd watch stream per process, multiplexing every watch of that process.

Watches are long-lived: each is created once (with a client-chosen watch ID)
and resumed from the revision after the last event it delivered whenever the
stream has to be reopened. Creating a watch per wait would cost a stream
message each time and, worse, etcd only catches up a watch that starts at an
older revision every 100 ms, which shows up as a 100 ms tail on lock
hand-offs.

A watch whose resume revision was compacted away is not an error: it resumes
at the current revision and its owner is told to resynchronise (``on_resync``),
i.e. to re-read whatever it depends on. A watch that must not skip anything
(a session watch: ``resume_after_compaction`` False) is dropped instead and its
owner told the same way.

The stream is opened requiring a leader (etcd's ``hasleader`` metadata, see
client.py): a member cut off from the quorum ends it rather than leaving every
watch silently stalled, and the reopened stream lands on a member that has one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]
from aetcd import rpc

log = logging.getLogger(__name__)

EventsCallback = Callable[[Sequence[Any], int], None]
"""Called with the events of one watch response (aetcd.rpc.Event) and its header revision."""
ResyncCallback = Callable[[int], None]
"""Called with the revision the watch resumes at when events may have been missed."""


@dataclass(eq=False)
class Subscription:
    key: bytes
    range_end: bytes
    next_revision: int
    on_events: EventsCallback
    on_resync: ResyncCallback
    deletes_only: bool = False
    watch_id: int = 0
    prev_kv: bool = False
    """Each event also carries the key's previous version."""
    resume_after_compaction: bool = True

    def create_request(self) -> Any:
        request = rpc.WatchCreateRequest(
            key=self.key,
            range_end=self.range_end,
            start_revision=self.next_revision,
            watch_id=self.watch_id,
            prev_kv=self.prev_kv,
        )
        if self.deletes_only:
            request.filters.append(rpc.WatchCreateRequest.FilterType.NOPUT)
        return rpc.WatchRequest(create_request=request)


OpenStream = Callable[[], Awaitable[Any]]
"""Opens a new bidirectional Watch call (grpc.aio.StreamStreamCall)."""


@dataclass(eq=False)
class WatchMux:
    open_stream: OpenStream
    _subs: dict[int, Subscription] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _call: Any = None
    _created: set[int] = field(default_factory=set)
    _write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _task: asyncio.Task[None] | None = None
    _closed: bool = False
    _pending: set[asyncio.Future[None]] = field(default_factory=set)

    async def subscribe(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        on_events: EventsCallback,
        on_resync: ResyncCallback,
        *,
        deletes_only: bool = False,
        prev_kv: bool = False,
        resume_after_compaction: bool = True,
    ) -> Subscription:
        """Watch ``[key, range_end)`` from ``start_revision`` until ``unsubscribe``.
        ``resume_after_compaction`` False: a compacted resume revision ends the watch
        (``on_resync`` is still called) instead of skipping to the oldest one kept."""
        sub = Subscription(
            key,
            range_end,
            start_revision,
            on_events,
            on_resync,
            deletes_only,
            next(self._ids),
            prev_kv,
            resume_after_compaction,
        )
        self._subs[sub.watch_id] = sub
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="etcd-watch-stream")
        else:
            await self._send_create(sub)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        if self._subs.pop(sub.watch_id, None) is None:
            return
        async with self._write_lock:
            if self._call is not None and sub.watch_id in self._created:
                self._created.discard(sub.watch_id)
                request = rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(watch_id=sub.watch_id))
                try:
                    await self._call.write(request)
                except (grpc.RpcError, asyncio.InvalidStateError, RuntimeError):
                    pass  # the stream is going away; the watch goes with it

    async def close(self) -> None:
        self._closed = True
        self._subs.clear()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _send_create(self, sub: Subscription) -> None:
        async with self._write_lock:
            if self._call is None or sub.watch_id in self._created or sub.watch_id not in self._subs:
                return  # the stream loop creates it when the stream (re)opens
            self._created.add(sub.watch_id)
            try:
                await self._call.write(sub.create_request())
            except (grpc.RpcError, asyncio.InvalidStateError, RuntimeError):
                self._created.discard(sub.watch_id)

    async def _open(self) -> Any:
        call = await self.open_stream()
        async with self._write_lock:
            self._call = call
            self._created.clear()
        for sub in list(self._subs.values()):
            await self._send_create(sub)
        return call

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            try:
                call = await self._open()
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF or not self._dispatch(response):
                        break
                    backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the stream broke: reopen and resume every watch
                log.debug("etcd watch stream failed: %s", exc)
            finally:
                async with self._write_lock:
                    if self._call is not None:
                        self._call.cancel()
                    self._call = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def _dispatch(self, response: Any) -> bool:
        """Deliver one response; False when the stream must be reopened."""
        if response.canceled and not response.compact_revision:
            # A create refused (etcd answers with watch ID -1, e.g. when the token the
            # stream was opened with expired): a new stream, opened with a fresh token,
            # creates every watch again from where it stopped.
            log.warning(
                "etcd refused a watch (%s); reopening the watch stream",
                response.cancel_reason or f"no reason given, watch ID {response.watch_id}",
            )
            return False
        sub = self._subs.get(response.watch_id)
        if sub is None:
            return True
        if response.canceled:
            # Compacted: resume at the oldest revision still kept and let the owner
            # re-read; events it already covered by re-reading may come again.
            log.info("etcd watch on %r fell behind compaction (%d)", sub.key, response.compact_revision)
            self._created.discard(sub.watch_id)
            if not sub.resume_after_compaction:
                del self._subs[sub.watch_id]
                sub.on_resync(response.compact_revision)
                return True
            sub.next_revision = response.compact_revision
            # etcd keeps a canceled watch's ID taken on this stream: resume under a new one.
            del self._subs[sub.watch_id]
            sub.watch_id = next(self._ids)
            self._subs[sub.watch_id] = sub
            sub.on_resync(sub.next_revision)
            asyncio.get_running_loop().call_later(0.05, self._recreate, sub)
            return True
        if response.events:
            sub.next_revision = max(event.kv.mod_revision for event in response.events) + 1
            sub.on_events(response.events, response.header.revision)
        return True

    def _recreate(self, sub: Subscription) -> None:
        if sub.watch_id in self._subs and not self._closed:
            task = asyncio.ensure_future(self._send_create(sub))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
