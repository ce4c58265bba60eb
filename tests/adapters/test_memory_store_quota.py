"""The memory store's byte quota, to the byte: each session counts its encoded state
(what ``encode_state`` writes) plus its ID; the limit itself may be reached, not passed."""

from __future__ import annotations

import pytest

from trellis.adapters.memory_store import MemoryStore
from trellis.adapters.rules import encode_state
from trellis.domain import State
from trellis.errors import StoreFull


def cost(state: State) -> int:
    return len(encode_state(state)) + len(state.session_id)


async def test_size_counts_each_state_and_its_id_exactly() -> None:
    store = MemoryStore()
    assert store.size == (0, 0)
    first, second = State.new("first", "start"), State.new("second-session", "start")
    await store.save("first", first)
    assert store.size == (1, cost(first))
    await store.save("second-session", second)
    assert store.size == (2, cost(first) + cost(second))
    first.context["note"] = "x" * 100  # a rewrite counts the new bytes instead of the old
    await store.save("first", first)
    assert store.size == (2, cost(first) + cost(second))
    await store.delete("first")
    assert store.size == (1, cost(second))
    await store.delete("second-session")
    assert store.size == (0, 0)


async def test_a_store_filled_to_exactly_its_limit_takes_the_save_and_not_one_byte_more() -> None:
    state = State.new("s", "start")
    exact = MemoryStore(max_bytes=cost(state))
    await exact.save("s", state)
    assert exact.size == (1, cost(state))
    short = MemoryStore(max_bytes=cost(state) - 1)
    with pytest.raises(StoreFull, match=f"would make the memory store hold {cost(state)} bytes"):
        await short.save("s", state)
    assert short.size == (0, 0)


async def test_deleting_frees_exactly_the_room_a_session_took() -> None:
    a, b = State.new("a", "start"), State.new("b", "start")
    assert cost(a) == cost(b)
    store = MemoryStore(max_bytes=cost(a))
    await store.save("a", a)
    with pytest.raises(StoreFull):
        await store.save("b", b)
    await store.delete("a")
    await store.save("b", b)  # the whole room is free again
    assert store.size == (1, cost(b))
