"""EtcdTimerQueue: durable timers in etcd, shared by every replica (trellis.timers).

A timer is the key ``<prefix>/timers/<due in ms, 16 digits>/<session id>`` holding
the session, its node and the due time (JSON); the revision it was armed for is the
key's own mod revision (see below). Keys sort by due time, so the due timers are one
range read: from the prefix up to ``now``.

Claiming moves a due key to ``now + claim_ttl`` in one transaction that holds only
while the key is unchanged since it was read: of replicas racing for one timer
exactly one wins, the others see the compare fail and skip it. A claimant that dies
leaves the moved key behind (with the armed revision copied into its value), due
again when the claim runs out, so a live replica
fires it then. ``done`` deletes the claimed key. Whether the timer's step applies is
decided by the session's revision (trellis.timers), not by the claim: the claim
only keeps replicas from doing the same work three times.

Arming costs no round trip: the timer key is written in the SAME transaction as the
step's save (EtcdStateStore.written_with_save), so a saved step and its timer exist
together or not at all, whichever replica dies when, and the timer key's mod revision
is the revision of the state it was armed for. A step that leaves the node does not
delete the old key (its due time is not known without a read): the old timer fires
as a no-op when it comes due and is dropped then.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Final

import orjson
from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient, prefix_end
from trellis.domain import State
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
        # Timers of steps about to be saved, by session (TimerService.before_save).
        self._staged: dict[str, Timer] = {}

    def _due_prefix(self, due: float) -> bytes:
        return self._prefix + f"{max(0, round(due * 1000)):0{_DUE_DIGITS}d}/".encode()

    def _key(self, due: float, session_id: str) -> bytes:
        return self._due_prefix(due) + session_id.encode()

    def stage(self, session_id: str, timer: Timer | None) -> None:
        if timer is None:
            self._staged.pop(session_id, None)
        else:
            self._staged[session_id] = timer

    def written_with_save(self, session_id: str, state: State) -> list[Any]:
        """The put of the timer staged for this save of the session (EtcdStateStore calls
        it while it builds the save's transaction). Its mod revision will be the saved
        state's revision: that is the revision the timer is armed for."""
        timer = self._staged.pop(session_id, None)
        if timer is None or timer.node_id != state.current_node_id:
            return []  # nothing staged for this state (e.g. a save that is not a step)
        value = orjson.dumps({"session_id": session_id, "node": timer.node_id, "due": timer.due})
        return [rpc.RequestOp(request_put=rpc.PutRequest(key=self._key(timer.due, session_id), value=value))]

    async def arm(self, timer: Timer) -> None:
        self._own_due.append(timer.due)  # written with the save already: only the wake-up hint

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
            session_id, node, due = str(value["session_id"]), str(value["node"]), float(value["due"])
            # Armed with the save: its revision is the key's; a claim moved it and kept it.
            revision = int(value.get("revision", kv.mod_revision))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # Not ours to interpret: drop it rather than read it on every poll forever.
            await self.client.call("DeleteRange", rpc.DeleteRangeRequest(key=kv.key))
            return None
        moved = self._key(until, session_id)
        claimed = {**value, "revision": revision}
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=kv.key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=kv.mod_revision
                )
            ],
            success=[
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=kv.key)),
                rpc.RequestOp(request_put=rpc.PutRequest(key=moved, value=orjson.dumps(claimed))),
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
