"""MemoryLoader specifics (the shared contract suite runs in test_contract_suites.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from trellis.adapters.memory_loader import MemoryLoader
from trellis.domain import Node, ToolCall, Transition
from trellis.errors import NodeDefinitionError, NodeNotFound


async def test_canonical_nodes_are_taken_as_they_are_without_sugar() -> None:
    node = Node(id="a", type="", undo=ToolCall(id="", name="cancel"))
    loader = MemoryLoader([node])
    got = await loader.get_node("a")
    assert got is node
    assert got.type == ""  # no default type for canonical nodes
    assert got.undo is not None and got.undo.id == ""  # no default tool-call ID either


async def test_mappings_go_through_the_file_form_sugar() -> None:
    loader = MemoryLoader([{"id": "start", "content": "Hi", "options": [{"text": "Go", "to": "end"}]}])
    node = await loader.get_node("start")
    assert node.type == "text"
    assert node.content == "Hi"
    assert node.input_type == "choice"
    assert node.transitions == (Transition("end", "input == 'Go'"),)


async def test_mapping_without_id_is_rejected() -> None:
    with pytest.raises(NodeDefinitionError, match="'id'"):
        MemoryLoader([{"content": "x"}])


async def test_listing_is_sorted() -> None:
    loader = MemoryLoader([Node(id="b"), Node(id="a"), {"id": "c"}])
    assert await loader.list_nodes() == ["a", "b", "c"]


async def test_put_remove_replace_all_publish_one_change_each() -> None:
    loader = MemoryLoader([Node(id="a")])
    stream = loader.watch()
    loader.put({"id": "b", "content": "new"})
    loader.remove("a")
    loader.replace_all([Node(id="z")])
    async with asyncio.timeout(5):
        changes = [await anext(stream) for _ in range(3)]
    assert [c.node_ids for c in changes] == [frozenset({"b"}), frozenset({"a"}), frozenset()]
    assert changes[0].revision < changes[1].revision < changes[2].revision
    assert await loader.list_nodes() == ["z"]
    with pytest.raises(NodeNotFound):
        await loader.get_node("b")


async def test_remove_of_missing_node_raises() -> None:
    with pytest.raises(NodeNotFound):
        MemoryLoader().remove("nope")


async def test_changing_a_tool_library_names_its_importers() -> None:
    loader = MemoryLoader(
        [
            {"id": "lib", "tools": [{"name": "t1"}]},
            {"id": "user", "tools": ["lib", {"name": "own"}]},
        ]
    )
    assert [t.name for t in (await loader.get_node("user")).tools] == ["t1", "own"]
    stream = loader.watch()
    loader.put({"id": "lib", "tools": [{"name": "t2"}]})
    async with asyncio.timeout(5):
        change = await anext(stream)
    assert change.node_ids == {"lib", "user"}
    assert [t.name for t in (await loader.get_node("user")).tools] == ["t2", "own"]


async def test_close_ends_watch_streams() -> None:
    loader = MemoryLoader()
    stream = loader.watch()
    loader.close()
    async with asyncio.timeout(5):
        assert [c async for c in stream] == []


async def test_a_dropped_watch_stream_is_not_kept_alive_by_the_loader() -> None:
    loader = MemoryLoader()
    stream = loader.watch()
    ref = weakref.ref(stream)
    del stream
    gc.collect()
    assert ref() is None
    loader.put({"id": "a"})  # publishing after the consumer left is fine
