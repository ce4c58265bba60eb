"""What a lock waiter waits on: the deletion of the key queued just before its own.

One watch per process covers every lock key of the deployment (deletions
only); each waiter registers for the one key it follows, so a release wakes
exactly the next in line. The client starts the watch with its first lease,
at the revision after the grant, so the watch is current (no catch-up) by the
time anyone waits, and wakes every waiter when a lease is lost: their
predecessors' keys, or their own, may be among the keys that just vanished.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from aetcd import rpc

from trellis.adapters.etcd.watch import WatchMux


class LockDeletions:
    """Wake-ups for "lock key K was deleted after revision R", fed by one prefix watch.

    A wake-up means "re-check": it may be spurious (resync, lease loss), never
    missing. Deletions seen shortly before a waiter registers are remembered, so
    a delete that raced ahead of the registration still wakes it.
    """

    REMEMBERED = 4096

    def __init__(self) -> None:
        self._waiting: dict[bytes, list[asyncio.Future[None]]] = {}
        self._recent: OrderedDict[bytes, int] = OrderedDict()
        self._forgotten_below = 0
        self._watching = False

    async def watch(self, watches: WatchMux, prefix: bytes, range_end: bytes, start_revision: int) -> None:
        """Feed on the one watch on every lock key, ``[prefix, range_end)``; only
        the first call subscribes (later ones find it running)."""
        if self._watching:
            return
        self._watching = True
        await watches.subscribe(
            prefix, range_end, start_revision, self.on_events, self.wake_all, deletes_only=True
        )

    def on_events(self, events: Sequence[Any], revision: int) -> None:
        for event in events:
            if event.type != rpc.Event.DELETE:
                continue
            key = event.kv.key
            self._recent[key] = event.kv.mod_revision
            self._recent.move_to_end(key)
            for future in self._waiting.pop(key, ()):
                if not future.done():
                    future.set_result(None)
        while len(self._recent) > self.REMEMBERED:
            _, forgotten = self._recent.popitem(last=False)
            self._forgotten_below = max(self._forgotten_below, forgotten)

    def wake_all(self, revision: int = 0) -> None:
        waiting, self._waiting = self._waiting, {}
        for futures in waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    async def wait(self, key: bytes, after_revision: int) -> None:
        """Return once ``key`` is deleted at a revision > ``after_revision`` (or on a resync)."""
        if self._recent.get(key, 0) > after_revision or self._forgotten_below > after_revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        try:
            await future
        finally:
            futures = self._waiting.get(key)
            if futures and future in futures:
                futures.remove(future)
                if not futures:
                    del self._waiting[key]
