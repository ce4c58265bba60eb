"""Properties over arbitrary JSON-compatible contexts."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from trellis.go_values import go_str
from trellis.templates import compile_template
from trellis.templates.functions import and_, or_
from trellis.templates.gofmt import go_quote

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
contexts = st.dictionaries(st.text(), json_values, max_size=5)

TO_JSON = compile_template("{{ toJson . }}")


def same_json(left: Any, right: Any) -> bool:
    """Equal, with ints still ints and floats still floats."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_json(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same_json(a, b) for a, b in zip(left, right, strict=True))
    return bool(left == right)


@given(contexts)
def test_to_json_parses_back_to_the_same_data(context: dict[str, Any]) -> None:
    text = TO_JSON.render(context)
    assert not any(char in text for char in "<>&")
    assert same_json(json.loads(text), context)


@given(st.text(), json_values)
def test_any_key_can_be_written_as_a_string_literal_and_looked_up(key: str, value: Any) -> None:
    template = compile_template(f"{{{{ index . {go_quote(key)} }}}}")
    assert template.render({key: value}) == go_str(value, "<no value>")


@given(st.text())
def test_text_without_actions_is_returned_unchanged(text: str) -> None:
    text = text.replace("{{", "{")
    assert compile_template(text).render({"x": 1}) == text


scalars = st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["", "x"])


@given(st.lists(scalars, min_size=1, max_size=4), st.booleans())
def test_short_circuit_and_or_agree_with_their_eager_definitions(values: list[Any], piped: bool) -> None:
    names = [f".v{position}" for position in range(len(values))]
    data = {f"v{position}": value for position, value in enumerate(values)}
    for name, eager in (("and", and_), ("or", or_)):
        if piped:
            text = f"{{{{ {names[-1]} | {name} {' '.join(names[:-1])} }}}}"
        else:
            text = f"{{{{ {name} {' '.join(names)} }}}}"
        assert compile_template(text).render(data) == go_str(eager(*values), "<no value>"), text
