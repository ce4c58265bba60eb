"""A session watch fed by etcd: every version of one session key, whichever replica
saved it (the WatchableStore capability of EtcdStateStore).

One etcd watch on the session's key, created on the process' shared watch stream
(watch.py, opened requiring a leader) with ``prev_kv``: each event carries the
version it replaced, so a change is reported as (previous, new) without this
process having seen the previous one, and a watch that resumes from any revision
reports the same changes as one that never stopped. etcd replays the events from
the requested revision in order, and the shared stream resumes from the revision
after the last event delivered when it reconnects, so nothing is skipped or
repeated. A resume revision that was compacted ends the watch with
WatchRevisionCompacted (never a silent skip).

Bookmarks: while nothing happens, every ``bookmark_interval`` seconds one read of
the key's revision (keys only) says whether every change of the key up to the
read's header revision has been delivered (the key's last modification is before
the watch's next revision); if so that header revision is reported. An idle
watch's resume revision therefore moves with the store, not with the session,
and stays ahead of compaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient
from trellis.adapters.etcd.watch import Subscription
from trellis.domain import State
from trellis.errors import BackendUnavailable, TrellisError, WatchRevisionCompacted
from trellis.ports.store import StoreEvent
from trellis.streams import QueueStream

log = logging.getLogger(__name__)

DEFAULT_BOOKMARK_INTERVAL: Final = 10.0
_QUEUE_SIZE: Final = 256
_DELETE: Final = rpc.Event.EventType.DELETE

Decode = Callable[[str, Any], State]
"""Decodes a key-value of the session (its revision is the kv's mod revision)."""


def session_events(
    client: EtcdClient,
    key: bytes,
    session_id: str,
    start_revision: int,
    decode: Decode,
    *,
    bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
) -> QueueStream[StoreEvent]:
    """The StoreEvents of ``key`` from ``start_revision`` (> 0); see the module doc."""
    if start_revision < 1:
        raise ValueError(f"start_revision must be at least 1, got {start_revision}")
    return _SessionEvents(client, key, session_id, start_revision, decode, bookmark_interval).stream


class _SessionEvents:
    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        session_id: str,
        start_revision: int,
        decode: Decode,
        bookmark_interval: float,
    ) -> None:
        self._client = client
        self._key = key
        self._session_id = session_id
        self._start = start_revision
        self._decode = decode
        self._interval = bookmark_interval
        self._stopped = asyncio.Event()
        # The last version delivered: the next event's prev_kv is usually it (decoded once).
        self._last: State | None = None
        self.stream: QueueStream[StoreEvent] = QueueStream(maxsize=_QUEUE_SIZE, feed=self._feed)

    async def _feed(self, publish: Callable[[StoreEvent], object]) -> None:
        sub = await self._client.watches.subscribe(
            self._key,
            b"",
            self._start,
            self._on_events,
            self._on_compacted,
            prev_kv=True,
            resume_after_compaction=False,
        )
        try:
            while not self._stopped.is_set():
                try:
                    await asyncio.wait_for(self._stopped.wait(), self._interval)
                except TimeoutError:
                    await self._bookmark(sub)
        finally:
            await self._client.watches.unsubscribe(sub)

    async def _bookmark(self, sub: Subscription) -> None:
        request = rpc.RangeRequest(key=self._key, keys_only=True)
        try:
            response = await self._client.call("Range", request)
        except BackendUnavailable as exc:
            log.debug("no bookmark for session %r: %s", self._session_id, exc)
            return
        # Every change of the key up to the read's revision was delivered (synchronously,
        # by _on_events) when its last modification is before the watch's next revision.
        # A missing key: its deletion is still to come (or it never existed): no bookmark.
        if response.kvs and response.kvs[0].mod_revision < sub.next_revision and not self._stopped.is_set():
            self._publish(StoreEvent(revision=int(response.header.revision)))

    def _on_events(self, events: Sequence[Any], header_revision: int) -> None:
        for event in events:
            if self._stopped.is_set():
                return
            kv = event.kv
            if event.type == _DELETE:
                self._publish(StoreEvent(revision=int(kv.mod_revision), deleted=True))
                self._stop()
                self.stream.end()
                return
            try:
                state = self._decode(self._session_id, kv)
                previous = self._previous(event.prev_kv)
            except TrellisError as exc:
                self._fail(exc)
                return
            self._last = state
            self._publish(StoreEvent(revision=state.revision, state=state, previous=previous))

    def _previous(self, prev_kv: Any) -> State | None:
        if not prev_kv.key:
            return None  # this version created the key
        if self._last is not None and self._last.revision == prev_kv.mod_revision:
            return self._last
        return self._decode(self._session_id, prev_kv)

    def _on_compacted(self, compact_revision: int) -> None:
        self._fail(WatchRevisionCompacted(self._session_id, self._start, compact_revision))

    def _publish(self, event: StoreEvent) -> None:
        if self.stream.publish(event) or self.stream.closed:
            return
        # The reader fell behind: end with an error it can resume from (etcd replays the
        # history), rather than drop a change or hold an unbounded queue.
        self._fail(
            BackendUnavailable(
                f"the watch of session {self._session_id!r} fell {_QUEUE_SIZE} events behind; "
                "resume it from the last revision received + 1"
            )
        )

    def _fail(self, exc: BaseException) -> None:
        self._stop()
        self.stream.fail(exc)

    def _stop(self) -> None:
        self._stopped.set()
