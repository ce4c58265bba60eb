"""EtcdStateStore: sessions in etcd, revisioned and fenced (StateStore + StepStore).

A session is the key ``<prefix>/sessions/<id>`` holding the state's JSON; its
revision is the key's mod revision. Every write is ONE transaction whose
compares carry the caller's conditions (expected revision, still holding the
lock), so a refused write changes nothing and says why (ConflictError or
LockLost, told apart by the reads of the failure branch).

As an OptimisticStepStore an uncontended step is ONE transaction: the store
remembers the last state and revision it read or wrote of recent sessions
(``_StateCache``, a hint the write's compares validate, never trusted alone),
and ``save_if_unlocked`` writes only while the session's revision is the one
read and no key exists under its lock prefix (nobody holds or waits for the
lock). A refused write reads the current state in the same transaction.

As a StepStore it is also the session's lock service, with the same lock keys
as EtcdLocker (the lock's name is the session ID): ``lock_and_load`` queues for
the lock and reads the state in one transaction, ``save_and_unlock`` writes and
releases in one. The session manager takes that path under contention and for
steps that run tools (docs/etcd.md, "The step protocol").

As a WatchableStore it feeds session watches from etcd itself
(session_watch.py), so a watch sees the steps of every replica.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient, prefix_end
from trellis.adapters.etcd.group_commit import GroupCommit
from trellis.adapters.etcd.locker import (
    EtcdLockHandle,
    absent,
    acquire_lock,
    count_lock_keys,
    no_lock_held,
)
from trellis.adapters.etcd.session_watch import DEFAULT_BOOKMARK_INTERVAL, session_events
from trellis.adapters.rules import check_expected_revision, check_session_id
from trellis.adapters.state_json import decode_document, decode_own_state, encode_document, state_document
from trellis.domain import State
from trellis.errors import (
    BackendUnavailable,
    ConflictError,
    InvalidInput,
    LockLost,
    SessionNotFound,
    StateTooLarge,
    TrellisError,
)
from trellis.ports.locker import LockHandle
from trellis.ports.store import SessionPage, StepConflict, StoreEvent
from trellis.streams import QueueStream

_LIST_CHUNK = 10_000
"""Keys per range request when listing everything (keeps each answer well under 4 MiB)."""
_HISTORY_STEPS = 32
"""Versions a retried save walks back to learn whether its lost first attempt landed."""
_ENVELOPE = 1024
"""Bytes etcd adds around a request before checking it against --max-request-bytes."""
CACHED_SESSIONS = 4096
"""Sessions whose last seen state a store remembers by default (least recently used go)."""


class _StateCache:
    """The last state (encoded) and revision this replica read or wrote of recent
    sessions: lets a step skip the read. Only a hint — a write conditioned on the
    cached revision is what validates it. Bounded, so memory stays flat however many
    sessions exist; values are compact copies (orjson's output keeps a larger buffer)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[int, bytes, bool]] = OrderedDict()

    def get(self, session_id: str) -> tuple[int, bytes, bool] | None:
        """(revision, encoded state, whether this process encoded it)."""
        entry = self._entries.get(session_id)
        if entry is not None:
            self._entries.move_to_end(session_id)
        return entry

    def put(self, session_id: str, revision: int, data: bytes, *, own: bool = True) -> None:
        if self._size <= 0:
            return
        self._entries[session_id] = (revision, memoryview(data).tobytes(), own)
        self._entries.move_to_end(session_id)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def put_read(self, session_id: str, response_op: Any) -> None:
        """Remember what a range response read of the session (forget it if absent)."""
        kvs = response_op.response_range.kvs
        if kvs:
            self.put(session_id, kvs[0].mod_revision, kvs[0].value, own=False)
        else:
            self.drop(session_id)

    def drop(self, session_id: str) -> None:
        self._entries.pop(session_id, None)


class _SessionLeases:
    """Session time-to-live without a lease per save: saves within one window share
    a lease that outlives the window by the TTL, so a session expires between
    ``ttl`` and ``ttl + window`` after its last save, for one grant per window."""

    def __init__(self, client: EtcdClient, ttl: float) -> None:
        self._client = client
        self._ttl = ttl
        self._window = max(1.0, ttl / 10)
        self._lease_id = 0
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def lease_for_save(self) -> int:
        if self._ttl <= 0:
            return 0
        loop = asyncio.get_running_loop()
        if loop.time() + self._ttl <= self._expires:
            return self._lease_id
        async with self._lock:
            if loop.time() + self._ttl > self._expires:
                seconds = math.ceil(self._ttl + self._window)
                requested = loop.time()
                response = await self._client.call("LeaseGrant", rpc.LeaseGrantRequest(TTL=seconds))
                self._lease_id, self._expires = response.ID, requested + response.TTL
            return self._lease_id


class EtcdStateStore:
    """StateStore, StepStore, OptimisticStepStore and WatchableStore on etcd. ``session_ttl``
    (seconds, 0 = keep forever) defaults to the client configuration's; ``cached_sessions``:
    how many sessions' last seen state to remember (0: none; every step then reads first);
    ``bookmark_interval``: seconds between bookmarks of an idle session watch."""

    def __init__(
        self,
        client: EtcdClient,
        *,
        session_ttl: float | None = None,
        max_state_bytes: int | None = None,
        cached_sessions: int = CACHED_SESSIONS,
        bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
    ) -> None:
        self.client = client
        self.bookmark_interval = bookmark_interval
        self._prefix = client.config.key("sessions") + b"/"
        ttl = client.config.session_ttl if session_ttl is None else session_ttl
        self._leases = _SessionLeases(client, ttl)
        self.max_state_bytes = max_state_bytes
        """Bytes of one encoded state (None: only etcd's request limit applies)."""
        self._cache = _StateCache(cached_sessions)
        self._group = GroupCommit(client, client.config.max_request_bytes - _ENVELOPE)
        self.written_with_save: Callable[[str, State], list[Any]] | None = None
        """Further puts to write in the same transaction as a session's save (the durable
        timer its new state arms: trellis.adapters.etcd.timers), so no round trip is added."""

    def _also(self, session_id: str, state: State) -> list[Any]:
        return self.written_with_save(session_id, state) if self.written_with_save is not None else []

    def _key(self, session_id: str) -> bytes:
        return self._prefix + check_session_id(session_id).encode()

    def _encode(self, state: State) -> bytes:
        return encode_document(state_document(state), limit=self.max_state_bytes)

    def _check_size(self, session_id: str, request: Any) -> int:
        """The request's size; raises StateTooLarge when etcd would refuse it."""
        size = int(request.ByteSize())
        limit = self.client.config.max_request_bytes
        if size + _ENVELOPE > limit:
            raise StateTooLarge(
                f"state of session {session_id!r} makes an etcd request of {size + _ENVELOPE} bytes; "
                f"etcd accepts at most {limit} bytes per request"
            )
        return size

    def _decode(self, session_id: str, kv: Any) -> State:
        return self._decode_value(session_id, kv.value, kv.mod_revision)

    def _decode_value(self, session_id: str, data: bytes, revision: int) -> State:
        try:
            document = decode_document(data, f"session {session_id!r} in etcd")
            return State.from_json(document, revision=revision)
        except ValueError as exc:
            raise TrellisError(f"stored state is unreadable: {exc}") from None

    # --- StateStore ------------------------------------------------------------------

    async def save(
        self,
        session_id: str,
        state: State,
        *,
        expected_revision: int | None = None,
        fence: LockHandle | None = None,
    ) -> int:
        key = self._key(session_id)
        data = self._encode(state)
        compare = []
        if expected_revision == 0:
            compare.append(absent(key))
        elif expected_revision is not None:
            compare.append(_mod_is(key, expected_revision))
        failure = [_read(key)]
        if isinstance(fence, EtcdLockHandle):
            compare.append(fence.fence_compare())  # checked by etcd, atomically with the write
            failure.append(_read_meta(fence.etcd_key))
        elif fence is not None and not fence.held():
            raise LockLost(f"lock {fence.key!r} is no longer held; session {session_id!r} not saved")
        lease = await self._leases.lease_for_save()
        success = [_put(key, data, lease), *self._also(session_id, state)]
        request = rpc.TxnRequest(compare=compare, success=success, failure=failure)
        self._check_size(session_id, request)
        self._cache.drop(session_id)
        response, attempts = await self.client.call_counting("Txn", request)
        if response.succeeded:
            self._cache.put(session_id, response.header.revision, data)
            return int(response.header.revision)
        if attempts > 1 and (landed := _our_write(response.responses[0], data)):
            return landed
        if attempts > 1 and expected_revision is not None:
            # An earlier attempt may have landed and someone else saved since.
            landed = await self._lost_write_landed(session_id, data, expected_revision, response.responses[0])
            if landed:
                return landed
        if isinstance(fence, EtcdLockHandle):
            _raise_if_lock_lost(fence, response.responses[1], session_id)
        stored = _revision_of(response.responses[0])
        check_expected_revision(session_id, stored, expected_revision)
        raise ConflictError(f"session {session_id!r} changed while it was being saved", session_id=session_id)

    async def load(self, session_id: str) -> State:
        response = await self.client.call("Range", rpc.RangeRequest(key=self._key(session_id)))
        if not response.kvs:
            raise SessionNotFound(session_id)
        return self._decode(session_id, response.kvs[0])

    async def delete(self, session_id: str) -> None:
        self._cache.drop(session_id)
        await self.client.call("DeleteRange", rpc.DeleteRangeRequest(key=self._key(session_id)))

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        """Keys only, in key (= ID) order, ``page_size`` at a time; everything (0) is
        read in chunks at one revision so the listing is a consistent snapshot."""
        if page_size < 0:
            raise InvalidInput(f"page_size must be 0 (all) or positive, got {page_size}")
        start = self._prefix + page_token.encode() + b"\0" if page_token else self._prefix
        end = prefix_end(self._prefix)
        ids: list[str] = []
        revision = 0
        while True:
            request = rpc.RangeRequest(
                key=start, range_end=end, keys_only=True, limit=page_size or _LIST_CHUNK, revision=revision
            )
            response = await self.client.call("Range", request)
            ids.extend(kv.key[len(self._prefix) :].decode() for kv in response.kvs)
            if page_size:
                return SessionPage(ids, ids[-1] if response.more and ids else "")
            if not response.more:
                return SessionPage(ids)
            revision = response.header.revision
            start = response.kvs[-1].key + b"\0"

    # --- WatchableStore ---------------------------------------------------------------

    def watch_session(self, session_id: str, start_revision: int) -> QueueStream[StoreEvent]:
        return session_events(
            self.client,
            self._key(session_id),
            session_id,
            start_revision,
            self._decode,
            bookmark_interval=self.bookmark_interval,
        )

    # --- StepStore -------------------------------------------------------------------

    async def lock_and_load(self, session_id: str, ttl: float) -> tuple[EtcdLockHandle, State | None]:
        key = self._key(session_id)
        read = rpc.RequestOp(request_range=rpc.RangeRequest(key=key))
        handle, extra = await acquire_lock(self.client, session_id, ttl, also=[read])
        try:
            kvs = extra[0].response_range.kvs
            state = self._decode(session_id, kvs[0]) if kvs else None
            self._cache.put_read(session_id, extra[0])
        except BaseException:
            await handle.unlock()
            raise
        handle.loaded_revision = state.revision if state is not None else 0
        return handle, state

    async def save_and_unlock(self, handle: LockHandle, session_id: str, state: State | None) -> int:
        if not isinstance(handle, EtcdLockHandle):
            raise InvalidInput("save_and_unlock needs the handle lock_and_load returned")
        try:
            key = self._key(session_id)
            if state is None:
                await handle.unlock()
                return handle.loaded_revision
            lease = await self._leases.lease_for_save()
            release = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=handle.etcd_key))
            data = self._encode(state)
            request = rpc.TxnRequest(
                compare=[handle.fence_compare(), _mod_is(key, state.revision)],
                success=[_put(key, data, lease), *self._also(session_id, state), release],
                # Read why before releasing: the lock key is deleted either way.
                failure=[_read_meta(handle.etcd_key), _read(key), release],
            )
            self._check_size(session_id, request)
        except BaseException:
            await handle.unlock()
            raise
        handle.mark_released()
        self._cache.drop(session_id)
        sent = asyncio.ensure_future(self.client.call_counting("Txn", request))
        try:
            response, attempts = await asyncio.shield(sent)
        except (asyncio.CancelledError, BackendUnavailable):
            # Whether it was applied is unknown; the lock key must go in any case.
            sent.add_done_callback(lambda _: handle.delete_later())
            raise
        handle.key_deleted()  # by either branch
        if response.succeeded:
            self._cache.put(session_id, response.header.revision, data)
            return int(response.header.revision)
        if attempts > 1 and not response.responses[0].response_range.kvs:
            # Our lock key is gone: an earlier attempt may have written and released, and
            # other steps may have saved since. (Look after the version we loaded, not
            # after our lock key: a holder ahead of us in the queue wrote after that.)
            landed = await self._lost_write_landed(session_id, data, state.revision, response.responses[1])
            if landed:
                return landed
        _raise_if_lock_lost(handle, response.responses[0], session_id)
        check_expected_revision(session_id, _revision_of(response.responses[1]), state.revision)
        raise ConflictError(f"session {session_id!r} changed while it was being saved", session_id=session_id)

    # --- OptimisticStepStore -----------------------------------------------------------

    def load_cached(self, session_id: str) -> State | None:
        entry = self._cache.get(session_id)
        if entry is None:
            return None
        revision, data, own = entry
        if own:  # encoded by this process: the trusted (faster) decoding applies
            return decode_own_state(data, revision)
        return self._decode_value(session_id, data, revision)

    async def load_unlocked(self, session_id: str) -> State | None:
        response = await self.client.call("Range", rpc.RangeRequest(key=self._key(session_id)))
        if not response.kvs:
            self._cache.drop(session_id)
            return None
        kv = response.kvs[0]
        self._cache.put(session_id, kv.mod_revision, kv.value, own=False)
        return self._decode(session_id, kv)

    async def save_if_unlocked(self, session_id: str, state: State) -> int:
        key = self._key(session_id)
        data = self._encode(state)
        lease = await self._leases.lease_for_save()
        compare = [_mod_is(key, state.revision), no_lock_held(self.client, session_id)]
        puts = [_put(key, data, lease), *self._also(session_id, state)]
        request = rpc.TxnRequest(
            compare=compare,
            success=puts,
            failure=[_read(key), count_lock_keys(self.client, session_id)],
        )
        size = self._check_size(session_id, request)
        self._cache.drop(session_id)
        # With the writes of other sessions, in one transaction, when there are any.
        revision, maybe_landed = await self._group.join(key, compare, puts, size)
        if revision:
            self._cache.put(session_id, revision, data)
            return revision
        # Alone, or again alone after its batch failed, to learn why and spare the others.
        self._group.begin()
        try:
            response, attempts = await self.client.call_counting("Txn", request)
        finally:
            self._group.end()
        if response.succeeded:
            self._cache.put(session_id, response.header.revision, data)
            return int(response.header.revision)
        current_op, locks_op = response.responses[0], response.responses[1]
        maybe_landed = maybe_landed or attempts > 1
        if maybe_landed and (landed := _our_write(current_op, data)):
            return landed
        if maybe_landed:
            landed = await self._lost_write_landed(session_id, data, state.revision, current_op)
            if landed:
                return landed
        self._cache.put_read(session_id, current_op)
        kvs = current_op.response_range.kvs
        current = self._decode(session_id, kvs[0]) if kvs else None
        locked = locks_op.response_range.count > 0
        why = "its lock is held or waited for" if locked else "it changed since it was read"
        raise StepConflict(
            f"session {session_id!r} not saved without its lock: {why}", current=current, locked=locked
        )

    async def _lost_write_landed(self, session_id: str, data: bytes, expected: int, current_op: Any) -> int:
        """Did an earlier attempt of this write land? Its revision if so, else 0.

        Why it is needed: ``call`` retries a transaction whose answer was lost (a
        member went away, a leader election lost the proposal), so the first attempt
        may have been applied, and the retry then fails its compare because of our
        own write. Both write paths compare the session's mod revision with
        ``expected``, so at most one write can follow ``expected`` under that compare:
        if ours landed, it is the session's first version after ``expected`` and holds
        exactly ``data``, however many saves came after it. Found by walking back from
        the current version (``current_op``, a range response), at most _HISTORY_STEPS
        versions. Raises BackendUnavailable when the history cannot tell (the key is
        gone, compacted, or changed too often since).
        """
        kvs = current_op.response_range.kvs
        if kvs:
            kv, first = kvs[0], None
            for _ in range(_HISTORY_STEPS):
                if kv is None or kv.mod_revision <= expected:
                    return int(first.mod_revision) if first is not None and first.value == data else 0
                first = kv
                before = rpc.RangeRequest(key=kv.key, revision=kv.mod_revision - 1)
                try:
                    older = await self.client.call("Range", before)
                except BackendUnavailable:
                    break  # compacted (or etcd gone)
                kv = older.kvs[0] if older.kvs else None
        raise BackendUnavailable(
            f"etcd: the outcome of saving session {session_id!r} is unknown: the answer was "
            "lost and the session's history since is no longer readable"
        )


def _put(key: bytes, value: bytes, lease: int) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def _mod_is(key: bytes, revision: int) -> Any:
    """Holds while ``key``'s mod revision is ``revision`` (0: the key does not exist)."""
    return rpc.Compare(key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision)


def _read(key: bytes) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def _our_write(response_op: Any, data: bytes) -> int:
    """The revision of the stored value when it is exactly ``data`` (else 0): after a
    retry, that means our own earlier attempt was applied."""
    kvs = response_op.response_range.kvs
    return int(kvs[0].mod_revision) if kvs and kvs[0].value == data else 0


def _read_meta(key: bytes) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, keys_only=True))


def _revision_of(response_op: Any) -> int:
    kvs = response_op.response_range.kvs
    return int(kvs[0].mod_revision) if kvs else 0


def _raise_if_lock_lost(handle: EtcdLockHandle, response_op: Any, session_id: str) -> None:
    kvs = response_op.response_range.kvs
    if not kvs or kvs[0].create_revision != handle.token:
        raise LockLost(
            f"lock {handle.key!r} (token {handle.token}) is no longer held in etcd; "
            f"session {session_id!r} not saved"
        )
