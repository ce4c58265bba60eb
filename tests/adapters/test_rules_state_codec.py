"""encode_state/decode_state, the value rules a third-party store applies through them
(docs/adapters.md): MIN_INT and MAX_INT are exactly the integers a state may hold."""

from __future__ import annotations

import pytest

from trellis.adapters.rules import MAX_INT, MIN_INT, decode_state, encode_state
from trellis.domain import State
from trellis.errors import InvalidInput, StateTooLarge


def holding(value: object) -> State:
    state = State.new("s", "start")
    state.context["n"] = value  # type: ignore[assignment]
    return state


@pytest.mark.parametrize("value", [MIN_INT, MAX_INT, 0, -1])
def test_the_integers_from_min_int_to_max_int_round_trip_exactly(value: int) -> None:
    data = encode_state(holding(value))
    back = decode_state(data, 4, "row s")
    assert back.context["n"] == value and type(back.context["n"]) is int
    assert back.revision == 4 and back.session_id == "s" and back.current_node_id == "start"


@pytest.mark.parametrize("value", [MIN_INT - 1, MAX_INT + 1])
def test_one_past_min_int_or_max_int_is_refused_with_where_it_is(value: int) -> None:
    with pytest.raises(InvalidInput, match="state of session 's' is not JSON-compatible"):
        encode_state(holding(value))


def test_encode_state_applies_the_size_limit() -> None:
    data = encode_state(holding("x" * 50))
    assert encode_state(holding("x" * 50), limit=len(data)) == data
    with pytest.raises(StateTooLarge):
        encode_state(holding("x" * 50), limit=len(data) - 1)


@pytest.mark.parametrize(
    "data", [b"{not json", b"[]", b'{"session_id": 3}', b'{"session_id": "s", "status": "bogus"}']
)
def test_damaged_data_is_a_value_error_starting_with_where(data: bytes) -> None:
    with pytest.raises(ValueError) as caught:
        decode_state(data, 1, "row 's' of sessions.db")
    assert str(caught.value).startswith("row 's' of sessions.db: ")
    assert not str(caught.value).startswith("row 's' of sessions.db: row 's' of sessions.db")
