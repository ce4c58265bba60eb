"""EtcdLocker: fair locks on etcd, after etcd's concurrency Mutex recipe.

Every waiter puts its own key ``<prefix>/locks/<name>/<lease-hex>-<n>`` under the
process lease (``n``: the lowest number none of this process' other waiters on that
lock holds, so almost always 1: a lock leaves one key name per process lease behind,
not one per acquire — etcd keeps every deleted key's history until compaction, and
a range over the lock's keys pays for it); the holder is the key with the lowest create revision; a waiter
waits for the deletion of the key created just before its own (FIFO, no
thundering herd, no polling). The fencing token is the create revision of the
holder's key: etcd revisions only grow, so a later holder has a larger token.

TTL: the key lives as long as the process lease, which is kept alive in the
background, so a live holder keeps its lock past ``ttl``; ``ttl`` is the lease
TTL, i.e. it bounds how long the lock outlives a crashed or partitioned holder.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import urllib.parse
from collections.abc import Sequence
from typing import Any

from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient, prefix_end
from trellis.adapters.etcd.lease import ProcessLease
from trellis.errors import BackendUnavailable, LockLost

log = logging.getLogger(__name__)


class _KeyNames:
    """The lock keys this process has queued and not yet seen deleted. A waiter takes
    ``<base><n>`` with the lowest ``n`` not in use, so one process waiting twice on a
    lock still gets two keys, and a name is reused only once its key is gone."""

    def __init__(self) -> None:
        self._in_use: set[bytes] = set()

    def take(self, base: bytes) -> bytes:
        for n in itertools.count(1):
            key = base + str(n).encode()
            if key not in self._in_use:
                self._in_use.add(key)
                return key
        raise AssertionError("unreachable")

    def give_back(self, key: bytes) -> None:
        self._in_use.discard(key)


_key_names = _KeyNames()


def lock_prefix(client: EtcdClient, name: str) -> bytes:
    # Quoting keeps '/' in names from nesting one lock's queue inside another's.
    return client.config.key("locks", urllib.parse.quote(name, safe="")) + b"/"


class EtcdLockHandle:
    """A held etcd lock (implements LockHandle)."""

    def __init__(
        self, client: EtcdClient, name: str, etcd_key: bytes, token: int, lease: ProcessLease
    ) -> None:
        self._client = client
        self._name = name
        self.etcd_key = etcd_key
        self._token = token
        self.lease = lease
        self._released = False
        self.loaded_revision = 0
        """Set by EtcdStateStore.lock_and_load: the session revision read with the lock."""

    @property
    def key(self) -> str:
        return self._name

    @property
    def token(self) -> int:
        return self._token

    def held(self) -> bool:
        return not self._released and self.lease.alive

    def fence_compare(self) -> Any:
        """The compare that holds only while this lock is still held in etcd."""
        return rpc.Compare(
            key=self.etcd_key,
            target=rpc.Compare.CREATE,
            result=rpc.Compare.EQUAL,
            create_revision=self._token,
        )

    def mark_released(self) -> None:
        """The caller deletes the key (in its own transaction) and calls ``key_deleted``
        or ``delete_later``."""
        self._released = True

    def key_deleted(self) -> None:
        """Our key is gone from etcd: its name may be used again."""
        _key_names.give_back(self.etcd_key)

    def delete_later(self) -> None:
        """Delete our key in the background (retrying until etcd answers)."""
        self._client.delete_later(self.etcd_key, then=self.key_deleted)

    async def unlock(self) -> None:
        if self._released:
            return
        self._released = True
        if not self.lease.alive:
            self.key_deleted()  # the key went with the lease (a lingering lease is revoked on re-grant)
            return
        await asyncio.shield(_delete_key(self._client, self.etcd_key))

    def __repr__(self) -> str:
        return f"EtcdLockHandle({self._name!r}, token={self._token}, held={self.held()})"


async def _delete_key(client: EtcdClient, key: bytes) -> None:
    try:
        await client.call("DeleteRange", rpc.DeleteRangeRequest(key=key))
    except BackendUnavailable as exc:
        log.warning("releasing etcd lock key %r failed (%s); retrying in the background", key, exc)
        client.delete_later(key, then=lambda: _key_names.give_back(key))
    else:
        _key_names.give_back(key)


def no_lock_held(client: EtcdClient, name: str) -> Any:
    """The compare that holds while lock ``name`` has no key: nobody holds or waits for it.
    (A compare over a range holds when every key in it matches; an empty range compares
    as one absent key, whose create revision is 0.)"""
    prefix = lock_prefix(client, name)
    return rpc.Compare(
        key=prefix,
        range_end=prefix_end(prefix),
        target=rpc.Compare.CREATE,
        result=rpc.Compare.EQUAL,
        create_revision=0,
    )


def count_lock_keys(client: EtcdClient, name: str) -> Any:
    """A read of how many keys lock ``name`` has (holder and waiters)."""
    prefix = lock_prefix(client, name)
    return rpc.RequestOp(
        request_range=rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)
    )


def absent(key: bytes) -> Any:
    """The compare that holds while ``key`` does not exist."""
    return rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)


def _queue_range(prefix: bytes, *, below: int = 0, limit: int) -> Any:
    """Keys of the lock's queue, newest first; ``below``: only those created before it."""
    return rpc.RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_target=rpc.RangeRequest.CREATE,
        sort_order=rpc.RangeRequest.DESCEND,
        limit=limit,
        keys_only=True,
        max_create_revision=below - 1 if below else 0,
    )


async def acquire_lock(
    client: EtcdClient, name: str, ttl: float, also: Sequence[Any] = ()
) -> tuple[EtcdLockHandle, Sequence[Any]]:
    """Queue for lock ``name`` and wait for our turn.

    One transaction puts our key and reads the two newest keys of the queue: ours
    and, if any, our predecessor. ``also`` (RequestOps, reads) run in that same
    transaction and their responses are returned with the handle; after a wait
    they come from the transaction that found the lock ours, so they are never
    older than the lock. Cancelling the wait deletes our key.
    """
    lease = await client.lease(ttl)
    prefix = lock_prefix(client, name)
    my_key = _key_names.take(prefix + f"{lease.id:016x}-".encode())
    request = rpc.TxnRequest(
        compare=[absent(my_key)],
        success=[
            rpc.RequestOp(request_put=rpc.PutRequest(key=my_key, value=b"", lease=lease.id)),
            rpc.RequestOp(request_range=_queue_range(prefix, limit=2)),
            *also,
        ],
        failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=my_key, keys_only=True))],
    )
    # Safe to retry: a retry after a lost answer finds our key and takes the failure branch.
    sent = asyncio.ensure_future(client.call("Txn", request))
    try:
        response = await asyncio.shield(sent)
    except BaseException:
        # The put may land (cancelled) or have landed (answer lost): remove our key once
        # the transaction has settled; its name is free again only then.
        client.delete_when_settled(sent, my_key, then=lambda: _key_names.give_back(my_key))
        raise
    predecessor: bytes | None
    if response.succeeded:
        token = response.header.revision
        queue = response.responses[1].response_range.kvs
        predecessor = queue[1].key if len(queue) > 1 else None
        extra: Sequence[Any] = response.responses[2:]
    else:
        token = response.responses[0].response_range.kvs[0].create_revision
        predecessor = b""  # unknown: look it up
    handle = EtcdLockHandle(client, name, my_key, token, lease)
    if predecessor is None:
        return handle, extra
    try:
        extra = await _wait_for_turn(client, handle, prefix, predecessor, response.header.revision, also)
    except BaseException:
        handle.mark_released()
        await asyncio.shield(_delete_key(client, my_key))
        raise
    return handle, extra


async def _wait_for_turn(
    client: EtcdClient,
    handle: EtcdLockHandle,
    prefix: bytes,
    predecessor: bytes,
    seen: int,
    also: Sequence[Any],
) -> Sequence[Any]:
    """Wait until no key older than ours is left; returns the ``also`` responses of
    the transaction that saw it."""
    recheck = rpc.TxnRequest(
        success=[
            rpc.RequestOp(request_range=_queue_range(prefix, below=handle.token, limit=1)),
            rpc.RequestOp(request_range=rpc.RangeRequest(key=handle.etcd_key, keys_only=True)),
            *also,
        ]
    )
    current = predecessor
    while True:
        if current:
            await client.lock_deletions.wait(current, seen)
        if not handle.lease.alive:
            raise BackendUnavailable(f"etcd lease lost while waiting for lock {handle.key!r}")
        response = await client.call("Txn", recheck)
        if not response.responses[1].response_range.kvs:
            raise LockLost(f"etcd lock {handle.key!r}: our queue entry vanished while waiting (lease lost)")
        queue = response.responses[0].response_range.kvs
        if not queue:
            return response.responses[2:]  # type: ignore[no-any-return]
        current = queue[0].key
        seen = response.header.revision


class EtcdLocker:
    """DistributedLocker on etcd. All locks of the process share its lease."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client

    async def acquire(self, key: str, ttl: float) -> EtcdLockHandle:
        handle, _ = await acquire_lock(self.client, key, ttl)
        return handle
