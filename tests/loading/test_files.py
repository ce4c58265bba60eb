"""draft_from_bytes: the per-file pipeline every file-storing loader shares."""

from __future__ import annotations

import pytest

from trellis.errors import NodeDefinitionError
from trellis.loading import draft_from_bytes, strip_node_extension


def test_the_path_gives_format_and_default_id() -> None:
    draft = draft_from_bytes(b'{"content": "J"}', "modules/pay/choice.json", source="etcd:/g/choice.json")
    assert (draft.node.id, draft.node.content, draft.node.source) == (
        "modules/pay/choice",
        "J",
        "etcd:/g/choice.json",
    )


def test_an_error_after_the_id_carries_the_declared_id() -> None:
    with pytest.raises(NodeDefinitionError) as caught:
        draft_from_bytes(b"---\nid: named\nwait: 1\n---\n", "page.md", source="g/page.md")
    assert caught.value.node_id == "named"


def test_a_parse_error_carries_the_path_id() -> None:
    with pytest.raises(NodeDefinitionError) as caught:
        draft_from_bytes(b"id: [x\n", "sub/page.yaml", source="g/sub/page.yaml")
    assert caught.value.node_id == "sub/page"


def test_size_and_encoding_are_checked_with_the_file_named() -> None:
    with pytest.raises(NodeDefinitionError, match=r"^g/a\.md: file is larger than the limit of 4 bytes$"):
        draft_from_bytes(b"hello", "a.md", source="g/a.md", max_bytes=4)
    assert draft_from_bytes(b"hello", "a.md", source="g/a.md", max_bytes=5).node.content == "hello"
    with pytest.raises(NodeDefinitionError, match=r"^g/a\.md: file is not valid UTF-8"):
        draft_from_bytes(b"\xff\xfe", "a.md", source="g/a.md")


def test_a_path_that_is_not_a_node_file_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not a node file"):
        draft_from_bytes(b"", "notes.txt", source="notes.txt")
    # An extension alone is no file name: there would be no ID.
    with pytest.raises(ValueError, match="not a node file"):
        draft_from_bytes(b"", ".md", source=".md")
    assert strip_node_extension(".json") == ".json"
    assert strip_node_extension("a.json") == "a"
