"""The memory store's own fast path: it decodes the bytes it wrote without the field checks
State.from_json applies to foreign documents, so that path must agree with the checked one
for every state, and a load must still be a copy nobody else holds."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from trellis.adapters.memory_store import MemoryStore
from trellis.adapters.state_json import decode_document, decode_own_state, encode_document, state_document
from trellis.contracts.store import json_contexts
from trellis.domain import State, Status

states = st.builds(
    State,
    session_id=st.text(min_size=1, max_size=8),
    current_node_id=st.text(max_size=8),
    status=st.sampled_from(list(Status)),
    pending_tool_call=st.text(max_size=8),
    context=json_contexts,
    system_context=json_contexts,
    locale=st.text(max_size=5),
    history=st.lists(st.text(max_size=6), max_size=4),
    terminated=st.booleans(),
)


@given(states, st.integers(min_value=1, max_value=2**40))
def test_the_trusted_decoding_agrees_with_the_checked_one(state: State, revision: int) -> None:
    data = encode_document(state_document(state))
    checked = State.from_json(decode_document(data, "test"), revision=revision)
    assert decode_own_state(data, revision) == checked
    assert checked.revision == revision


async def test_two_loads_share_no_nested_value_with_each_other_or_the_store() -> None:
    store = MemoryStore()
    state = State.new("s", "a")
    state.context["items"] = [{"n": 1}]
    state.system_context["ans"] = ["x"]
    await store.save("s", state)

    first = await store.load("s")
    first.context["items"][0]["n"] = 99
    first.system_context["ans"].append("y")
    first.history.append("b")
    second = await store.load("s")
    assert second.context == {"items": [{"n": 1}]}
    assert second.system_context == {"ans": ["x"]}
    assert second.history == ["a"]


async def test_a_small_stored_state_costs_well_under_a_kilobyte() -> None:
    store = MemoryStore()
    state = State.new("s", "start")
    state.context["n"] = 1
    sessions = 2000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(sessions):
            state.session_id = f"s{n:05d}"
            await store.save(state.session_id, state)
        per_session = (tracemalloc.get_traced_memory()[0] - before) / sessions
    finally:
        tracemalloc.stop()
    # A ~120-byte state kept orjson's 4 KiB output buffer alive until it was copied.
    assert per_session < 1024, per_session
