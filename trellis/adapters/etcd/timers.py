"""EtcdTimerQueue: durable timers in etcd, shared by every replica (trellis.timers).

A timer is the key ``<prefix>/timers/<due in ms, 16 digits>/<session id>`` holding
the session, the revision it was armed for and its node (JSON). Keys sort by due
time, so the due timers are one range read: from the prefix up to ``now``.

Claiming moves a due key to ``now + claim_ttl`` in one transaction that holds only
while the key is unchanged since it was read: of replicas racing for one timer
exactly one wins, the others see the compare fail and skip it. A claimant that dies
leaves the moved key behind, due again when the claim runs out, so a live replica
fires it then. ``done`` deletes the claimed key. Whether the timer's step applies is
decided by the session's revision (trellis.timers), not by the claim: the claim
only keeps replicas from doing the same work three times.

Arming is a put of its own after the step's save (one more round trip, only for
steps that stop at a node with a timeout; a step stopping elsewhere costs nothing).
The window between the two writes is the one gap: a replica killed right after a
save and before the arm leaves that session without a timer (docs/etcd.md).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Final

import orjson
from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient, prefix_end
from trellis.timers import Timer

_DUE_DIGITS: Final = 16
_CLAIMING: Final = 32
"""Claim transactions in flight at once."""


class EtcdTimerQueue:
    durable = True

    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self._prefix = client.config.key("timers") + b"/"
        self._claiming = asyncio.Semaphore(_CLAIMING)
        # Due times this replica armed: lets it wake for its own timers between polls.
        self._own_due: list[float] = []

    def _due_prefix(self, due: float) -> bytes:
        return self._prefix + f"{max(0, round(due * 1000)):0{_DUE_DIGITS}d}/".encode()

    def _key(self, due: float, session_id: str) -> bytes:
        return self._due_prefix(due) + session_id.encode()

    async def arm(self, timer: Timer) -> None:
        value = orjson.dumps(
            {
                "session_id": timer.session_id,
                "revision": timer.revision,
                "node": timer.node_id,
                "due": timer.due,
            }
        )
        await self.client.call("Put", rpc.PutRequest(key=self._key(timer.due, timer.session_id), value=value))
        self._own_due.append(timer.due)

    async def claim_due(self, now: float, limit: int, claim_ttl: float) -> list[Timer]:
        self._own_due = [due for due in self._own_due if due > now]
        end = self._due_prefix(now + 0.001)  # every key due at or before ``now``
        response = await self.client.call(
            "Range", rpc.RangeRequest(key=self._prefix, range_end=end, limit=limit)
        )
        kvs = list(response.kvs)
        # Replicas read the same due keys: each tries them in its own order, so that
        # they mostly claim different ones instead of all racing for the first.
        random.shuffle(kvs)
        claims = await asyncio.gather(*(self._claim(kv, now + claim_ttl) for kv in kvs))
        return [timer for timer in claims if timer is not None]

    async def _claim(self, kv: Any, until: float) -> Timer | None:
        try:
            value = orjson.loads(kv.value)
            session_id, revision, node = str(value["session_id"]), int(value["revision"]), str(value["node"])
            due = float(value["due"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # Not ours to interpret: drop it rather than read it on every poll forever.
            await self.client.call("DeleteRange", rpc.DeleteRangeRequest(key=kv.key))
            return None
        moved = self._key(until, session_id)
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=kv.key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=kv.mod_revision
                )
            ],
            success=[
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=kv.key)),
                rpc.RequestOp(request_put=rpc.PutRequest(key=moved, value=kv.value)),
            ],
        )
        async with self._claiming:
            response = await self.client.call("Txn", request)
        if not response.succeeded:
            return None  # another replica claimed (or finished) it
        return Timer(session_id, revision, node, due, token=moved.decode())

    async def done(self, timer: Timer) -> None:
        await self.client.call("DeleteRange", rpc.DeleteRangeRequest(key=timer.token.encode()))

    def next_due(self) -> float | None:
        return min(self._own_due) if self._own_due else None

    async def count(self) -> int:
        """Timers armed or claimed, whoever armed them (for tests and operators)."""
        response = await self.client.call(
            "Range", rpc.RangeRequest(key=self._prefix, range_end=prefix_end(self._prefix), count_only=True)
        )
        return int(response.count)
