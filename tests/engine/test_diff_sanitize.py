"""StateDiff (docs/api.md, "Sessions": Watch) and the input sanitiser (docs/engine.md, "Input")."""

from __future__ import annotations

import pytest

from trellis.diff import diff
from trellis.domain import State, Status
from trellis.errors import InvalidInput
from trellis.sanitize import input_limit_from_env, sanitize_input

pytestmark = pytest.mark.in_process_only(reason="builds no engine: the diff and the sanitiser are functions")


def _state(**fields: object) -> State:
    state = State.new("s", "a")
    for key, value in fields.items():
        setattr(state, key, value)
    return state


def test_11_new_none_gives_none() -> None:
    assert diff(_state(), None) is None


def test_11_old_none_reports_everything() -> None:
    new = _state(context={"x": 1}, history=["a", "b"], current_node_id="b")
    d = diff(None, new)
    assert d is not None
    assert d.to_json() == {
        "session_id": "s",
        "current_node_id": "b",
        "status": "active",
        "context": {"x": 1},
        "history": {"appended": ["a", "b"]},
    }


def test_11_old_none_terminated_only_when_true() -> None:
    d = diff(None, _state(terminated=True))
    assert d is not None and d.terminated is True


def test_11_changes_additions_and_removals() -> None:
    old = _state(context={"same": 1, "changed": [1], "gone": "x", "flag": 1})
    new = _state(context={"same": 1, "changed": [2], "added": None, "flag": True}, history=["a", "b"])
    d = diff(old, new)
    assert d is not None
    assert d.context == {"changed": [2], "added": None, "gone": None, "flag": True}
    assert d.history_appended == ("b",)
    assert d.current_node_id is None and d.status is None and d.terminated is None


def test_11_status_node_and_terminated_changes() -> None:
    old = _state()
    new = _state(status=Status.TERMINATED, terminated=True, current_node_id="z")
    d = diff(old, new)
    assert d is not None
    assert (d.status, d.terminated, d.current_node_id) == (Status.TERMINATED, True, "z")


def test_11_shorter_history_and_ignored_fields_give_none() -> None:
    old = _state(history=["a", "b"])
    new = _state(history=["a"], pending_tool_call="t", system_context={"ans": 1}, locale="pt")
    assert diff(old, new) is None


# --- sanitiser -------------------------------------------------------------------------------------


def test_14_6_control_characters_removed_except_whitespace_controls() -> None:
    assert sanitize_input("a\x1b[31mb\x00c\x07\n\td\r") == "a[31mbc\n\td\r"


def test_14_6_no_trimming_or_truncation() -> None:
    assert sanitize_input("  hi  ") == "  hi  "
    assert sanitize_input("é" * 2048) == "é" * 2048  # 4096 bytes exactly


def test_14_6_oversized_input_rejected_in_bytes() -> None:
    with pytest.raises(InvalidInput, match="input exceeds maximum allowed size: size=4098 limit=4096"):
        sanitize_input("é" * 2049)
    with pytest.raises(InvalidInput, match="size=6 limit=5"):
        sanitize_input("abcdef", limit=5)


def test_14_6_invalid_utf8_rejected() -> None:
    broken = b"ok\xff".decode("utf-8", errors="surrogateescape")
    with pytest.raises(InvalidInput, match="UTF-8"):
        sanitize_input(broken)


@pytest.mark.parametrize(("raw", "limit"), [("100", 100), ("0", 4096), ("-3", 4096), ("x", 4096), ("", 4096)])
def test_14_6_limit_from_environment(raw: str, limit: int) -> None:
    assert input_limit_from_env({"TRELLIS_MAX_INPUT_SIZE": raw}) == limit
