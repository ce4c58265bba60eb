"""Flows, tools and a lock-service store shared by the session manager tests."""

from __future__ import annotations

import asyncio
from typing import Any

from trellis.adapters.local_locker import LocalLocker
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import JSONValue, State
from trellis.engine import Engine
from trellis.errors import LockLost, SessionNotFound
from trellis.ports.locker import LockHandle

# start (pass-through text) → ask (waits for input) → bump (served tool: n+1) → ask ...
COUNTER: list[dict[str, Any]] = [
    {"id": "start", "content": "Welcome", "to": "ask"},
    {"id": "ask", "content": "n is {{ .n }}", "wait": True, "default_context": {"n": 0}, "to": "bump"},
    {"id": "bump", "do": {"name": "increment", "args": {"n": "{{ .n }}"}}, "save_to": "n", "to": "ask"},
]

# ask → charge (a tool no dispatcher serves: left to the caller) → done (terminal)
PAYMENT: list[dict[str, Any]] = [
    {"id": "start", "content": "Pay?", "input_type": "confirm", "save_to": "ok", "to": "charge"},
    {
        "id": "charge",
        "do": {"name": "charge_card", "args": {"amount": 10}},
        "save_to": "receipt",
        "to": "done",
    },
    {"id": "done", "content": "Paid: {{ .receipt }}"},
]

# Two text nodes that pass to each other forever.
LOOP: list[dict[str, Any]] = [
    {"id": "start", "content": "ping", "to": "pong"},
    {"id": "pong", "content": "pong", "to": "start"},
]


def engine(flow: list[dict[str, Any]]) -> Engine:
    return Engine(MemoryLoader(flow), entry_node=flow[0]["id"])


class CountingTool:
    """The ``increment`` tool; yields to the loop so concurrent steps really interleave."""

    def __init__(self) -> None:
        self.calls = 0
        self.keys: list[str] = []

    async def __call__(self, args: dict[str, JSONValue]) -> JSONValue:
        self.calls += 1
        await asyncio.sleep(0)
        return int(str(args["n"])) + 1


class LockingMemoryStore(MemoryStore):
    """A MemoryStore that is also its own lock service (the StepStore capability), the way the
    etcd store is: lock+load and save+unlock as single operations."""

    def __init__(self) -> None:
        super().__init__()
        self.locker = LocalLocker()
        self.step_calls = 0

    async def lock_and_load(self, session_id: str, ttl: float) -> tuple[LockHandle, State | None]:
        self.step_calls += 1
        handle = await self.locker.acquire(session_id, ttl)
        try:
            state: State | None = await self.load(session_id)
        except SessionNotFound:
            state = None
        except BaseException:
            await handle.unlock()
            raise
        return handle, state

    async def save_and_unlock(self, handle: LockHandle, session_id: str, state: State | None) -> int:
        try:
            if state is None:
                if not handle.held():
                    raise LockLost(f"lock {handle.key!r} lost")
                return 0
            return await self.save(session_id, state, expected_revision=state.revision, fence=handle)
        finally:
            await handle.unlock()


def chain(length: int) -> list[dict[str, Any]]:
    """``c0 -> c1 -> ... -> c<length>``: each node waits for input and saves it to
    ``got_<i>``, no tools — every step can commit without the lock. The inputs stored
    tell which steps were applied, in which order, and that none was applied twice."""
    nodes: list[dict[str, Any]] = [
        {"id": f"c{i}", "content": f"step {i}", "wait": True, "save_to": f"got_{i}", "to": f"c{i + 1}"}
        for i in range(length)
    ]
    return [*nodes, {"id": f"c{length}", "content": "end", "wait": True}]
