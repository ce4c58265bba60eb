"""EtcdStateStore: sessions in etcd, revisioned and fenced (StateStore + StepStore).

A session is the key ``<prefix>/sessions/<id>`` holding the state's JSON; its
revision is the key's mod revision. Every write is ONE transaction whose
compares carry the caller's conditions (expected revision, still holding the
lock), so a refused write changes nothing and says why (ConflictError or
LockLost, told apart by the reads of the failure branch).

As a StepStore it is also the session's lock service, with the same lock keys
as EtcdLocker (the lock's name is the session ID): ``lock_and_load`` queues for
the lock and reads the state in one transaction, ``save_and_unlock`` writes and
releases in one. An uncontended durable step costs two round trips.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient, prefix_end
from trellis.adapters.etcd.locker import EtcdLockHandle, absent, acquire_lock
from trellis.adapters.state_json import decode_document, encode_document, state_document
from trellis.adapters.store_rules import check_expected_revision, check_session_id
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
from trellis.ports.store import SessionPage

_LIST_CHUNK = 10_000
"""Keys per range request when listing everything (keeps each answer well under 4 MiB)."""
_HISTORY_STEPS = 32
"""Versions a retried save walks back to learn whether its lost first attempt landed."""
_ENVELOPE = 1024
"""Bytes etcd adds around a request before checking it against --max-request-bytes."""


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
    """StateStore and StepStore on etcd. ``session_ttl`` (seconds, 0 = keep forever)
    defaults to the client configuration's."""

    def __init__(
        self, client: EtcdClient, *, session_ttl: float | None = None, max_state_bytes: int | None = None
    ) -> None:
        self.client = client
        self._prefix = client.config.key("sessions") + b"/"
        ttl = client.config.session_ttl if session_ttl is None else session_ttl
        self._leases = _SessionLeases(client, ttl)
        self.max_state_bytes = max_state_bytes
        """Bytes of one encoded state (None: only etcd's request limit applies)."""

    def _key(self, session_id: str) -> bytes:
        return self._prefix + check_session_id(session_id).encode()

    def _encode(self, state: State) -> bytes:
        return encode_document(state_document(state), limit=self.max_state_bytes)

    def _check_size(self, session_id: str, request: Any) -> None:
        size = request.ByteSize() + _ENVELOPE
        limit = self.client.config.max_request_bytes
        if size > limit:
            raise StateTooLarge(
                f"state of session {session_id!r} makes an etcd request of {size} bytes; "
                f"etcd accepts at most {limit} bytes per request"
            )

    def _decode(self, session_id: str, kv: Any) -> State:
        try:
            document = decode_document(kv.value, f"session {session_id!r} in etcd")
            return State.from_json(document, revision=kv.mod_revision)
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
        request = rpc.TxnRequest(compare=compare, success=[_put(key, data, lease)], failure=failure)
        self._check_size(session_id, request)
        response, attempts = await self.client.call_counting("Txn", request)
        if response.succeeded:
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
        raise ConflictError(f"session {session_id!r} changed while it was being saved")

    async def load(self, session_id: str) -> State:
        response = await self.client.call("Range", rpc.RangeRequest(key=self._key(session_id)))
        if not response.kvs:
            raise SessionNotFound(session_id)
        return self._decode(session_id, response.kvs[0])

    async def delete(self, session_id: str) -> None:
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

    # --- StepStore -------------------------------------------------------------------

    async def lock_and_load(self, session_id: str, ttl: float) -> tuple[EtcdLockHandle, State | None]:
        key = self._key(session_id)
        read = rpc.RequestOp(request_range=rpc.RangeRequest(key=key))
        handle, extra = await acquire_lock(self.client, session_id, ttl, also=[read])
        try:
            kvs = extra[0].response_range.kvs
            state = self._decode(session_id, kvs[0]) if kvs else None
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
                success=[_put(key, data, lease), release],
                # Read why before releasing: the lock key is deleted either way.
                failure=[_read_meta(handle.etcd_key), _read(key), release],
            )
            self._check_size(session_id, request)
        except BaseException:
            await handle.unlock()
            raise
        handle.mark_released()
        sent = asyncio.ensure_future(self.client.call_counting("Txn", request))
        try:
            response, attempts = await asyncio.shield(sent)
        except (asyncio.CancelledError, BackendUnavailable):
            # Whether it was applied is unknown; the lock key must go in any case.
            self.client.delete_when_settled(sent, handle.etcd_key)
            raise
        if response.succeeded:
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
        raise ConflictError(f"session {session_id!r} changed while it was being saved")

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
