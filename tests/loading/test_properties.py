"""Properties of the file formats and the sugar, over generated inputs."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from trellis.go_values import go_str
from trellis.loading import build_node, parse_document

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@given(body=texts)
def test_the_body_after_frontmatter_is_kept_byte_for_byte(body: str) -> None:
    data, parsed = parse_document("---\ntype: text\n---\n" + body, ".md", source="p.md", node_id="p")
    assert data == {"type": "text"}
    assert parsed == body


@given(text=texts)
def test_a_file_not_starting_with_dashes_is_all_content(text: str) -> None:
    if text.startswith(("---\n", "---\r\n")):
        text = "x" + text
    assert parse_document(text, ".md", source="p.md", node_id="p") == ({}, text)


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


keys = st.text(alphabet="abcxyz_", min_size=1, max_size=6)  # no '-': flattened keys cannot collide


@given(metadata=st.dictionaries(keys, values, max_size=5))
def test_flattened_metadata_is_a_flat_map_of_strings(metadata: dict[str, Any]) -> None:
    node = build_node("n", {"metadata": metadata}, "", source="n.md")
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in node.metadata.items())
    for key, value in metadata.items():
        if isinstance(value, list):
            assert node.metadata[key] == " ".join(go_str(item) for item in value)
        elif not isinstance(value, dict):
            assert node.metadata[key] == go_str(value)


@given(texts_=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5, unique=True))
def test_option_texts_become_choice_options_in_order(texts_: list[str]) -> None:
    node = build_node("n", {"options": [{"text": t, "to": "next"} for t in texts_]}, "", source="n.md")
    assert node.input_type == "choice"
    assert node.input_options == tuple(texts_)
    assert [t.condition for t in node.transitions] == [
        "input == '" + t.replace("'", "\\'") + "'" for t in texts_
    ]
