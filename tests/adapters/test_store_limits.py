"""What the in-process stores refuse: values JSON cannot hold and states over their size limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trellis.adapters.file_store import FileStore
from trellis.adapters.memory_store import MemoryStore
from trellis.domain import State
from trellis.errors import InvalidInput, SessionNotFound, StateTooLarge, StoreFull
from trellis.ports.store import StateStore

STORES: dict[str, Callable[[Path, int | None], StateStore]] = {
    "memory": lambda tmp, limit: MemoryStore(max_state_bytes=limit),
    "file": lambda tmp, limit: FileStore(tmp, max_state_bytes=limit),
}


@pytest.mark.parametrize("make", STORES.values(), ids=STORES.keys())
@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"deep": [1, float("-inf")]}, {1, 2}, 2**64])
async def test_values_json_cannot_hold_are_refused(
    tmp_path: Path, make: Callable[[Path, int | None], StateStore], value: object
) -> None:
    store = make(tmp_path, None)
    state = State.new("s", "start")
    state.context["bad"] = value
    with pytest.raises(InvalidInput) as caught:
        await store.save("s", state)
    assert "'s'" in str(caught.value) or "context" in str(caught.value)
    with pytest.raises(SessionNotFound):
        await store.load("s")


@pytest.mark.parametrize("make", STORES.values(), ids=STORES.keys())
async def test_a_state_over_the_limit_is_refused(
    tmp_path: Path, make: Callable[[Path, int | None], StateStore]
) -> None:
    store = make(tmp_path, 1000)
    state = State.new("s", "start")
    state.context["small"] = "x" * 10
    await store.save("s", state)
    state.context["big"] = "x" * 2000
    with pytest.raises(StateTooLarge, match="limit is 1000 bytes"):
        await store.save("s", state)
    assert "big" not in (await store.load("s")).context


async def test_the_memory_store_quota_counts_sessions_and_bytes() -> None:
    store = MemoryStore(max_sessions=2, max_bytes=5000)
    small = State.new("a", "start")
    await store.save("a", small)
    await store.save("b", State.new("b", "start"))
    with pytest.raises(StoreFull, match="2 sessions"):
        await store.save("c", State.new("c", "start"))
    with pytest.raises(SessionNotFound):
        await store.load("c")
    # Growing a stored session counts the difference; past the byte limit nothing changes.
    small.context["text"] = "x" * 3000
    await store.save("a", small)
    small.context["text"] = "x" * 6000
    with pytest.raises(StoreFull, match="limit is 5000 bytes"):
        await store.save("a", small)
    assert len((await store.load("a")).context["text"]) == 3000  # type: ignore[arg-type]
    # Deleting frees both.
    await store.delete("a")
    await store.delete("a")  # twice: counted once
    sessions, held = store.size
    assert sessions == 1 and 0 < held < 500
    await store.save("c", State.new("c", "start"))
