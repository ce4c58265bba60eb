"""The GraphLoader (+ Watchable) contract: every graph loader (memory, directory, etcd,
gRPC client) passes it.

Definitions are given in file form (the mappings a JSON node file holds, with an
``id`` and the body under ``content``); the loader under test must serve them as
canonical nodes with the sugar of docs/engine.md ("Node fields") applied. Run it against your loader in a
few lines::

    from trellis.contracts.loader import GraphLoaderContract

    class TestMyLoader(GraphLoaderContract):
        async def make_loader(self, tmp_path, definitions):
            backend = await start_backend(tmp_path)
            for definition in definitions:
                await backend.publish(definition["id"], json.dumps(definition))
            return MyLoader(backend)

        # optional: release what make_loader opened
        async def close_loader(self, loader):
            await loader.close()

        # optional, enables the watch tests (the loader must also be Watchable)
        async def put_definition(self, loader, definition):
            await loader.backend.publish(definition["id"], json.dumps(definition))

        async def remove_definition(self, loader, node_id):
            await loader.backend.delete(node_id)

A loader may reject an invalid definition either in ``make_loader`` or when the node
is requested; both are accepted, as long as the error is a NodeDefinitionError that
names the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from trellis.domain import Tool, Transition
from trellis.errors import NodeDefinitionError, NodeLoadError, NodeNotFound
from trellis.ports.loader import GraphChange, GraphLoader, Watchable

Definition = Mapping[str, Any]
LoaderFactory = Callable[[Sequence[Definition]], Awaitable[GraphLoader]]

_BOUND = 10.0  # seconds: no single loader operation in this suite may take longer
_WARMUP_ID = "contract-warmup"

TOUR: list[Definition] = [
    {
        "id": "start",
        "content": "# Welcome\n",
        "options": [{"text": "Inputs", "to": "inputs"}],
        "to": "choice",
    },
    {
        "id": "choice",
        "type": "question",
        "content": "Succeed?",
        "transitions": [
            {"to": "success", "condition": "input == 'yes'"},
            {"to_node_id": "try-again", "condition": "input == 'no'"},
        ],
    },
    {"id": "inputs", "options": [{"text": "Go to End", "to": "success"}], "input_default": "Go to End"},
    {"id": "success", "wait": True, "content": "Done"},
    {"id": "try-again", "wait": True, "to": "start"},
    {"id": "modules/checkout/start", "options": [{"text": "Back", "jump_to": "start"}]},
]


async def _close(stream: Any) -> None:
    """Close a watch stream that can be closed (async generators and QueueStream can)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class GraphLoaderContract:
    """Subclass with a ``Test`` name and implement ``make_loader``."""

    # Marked explicitly so the suite also runs under pytest-asyncio's strict mode.
    pytestmark = pytest.mark.asyncio

    watch_bound: ClassVar[float] = 15.0
    """Seconds a watch test waits, at most, for the change it caused."""

    retrigger_after: ClassVar[float] = 1.0
    """While warming a watch up, seconds to wait for an event before writing again."""

    async def make_loader(self, tmp_path: Path, definitions: Sequence[Definition]) -> GraphLoader:
        raise NotImplementedError("override make_loader to return the loader under test")

    async def close_loader(self, loader: GraphLoader) -> None:
        """Release what make_loader opened (default: nothing)."""

    async def put_definition(self, loader: GraphLoader, definition: Definition) -> None:
        """Add or replace one definition behind the loader's back (enables the watch tests)."""
        raise NotImplementedError

    async def remove_definition(self, loader: GraphLoader, node_id: str) -> None:
        """Remove one definition behind the loader's back (enables the watch tests)."""
        raise NotImplementedError

    @pytest_asyncio.fixture
    async def make(self, tmp_path: Path) -> AsyncIterator[LoaderFactory]:
        made: list[GraphLoader] = []
        count = 0

        async def factory(definitions: Sequence[Definition]) -> GraphLoader:
            nonlocal count
            count += 1
            directory = tmp_path / f"graph{count}"
            directory.mkdir()
            async with asyncio.timeout(_BOUND):
                loader = await self.make_loader(directory, definitions)
            made.append(loader)
            return loader

        try:
            yield factory
        finally:
            for loader in made:
                await self.close_loader(loader)

    # --- listing and lookup --------------------------------------------------------------

    async def test_an_empty_graph_lists_no_nodes(self, make: LoaderFactory) -> None:
        loader = await make([])
        async with asyncio.timeout(_BOUND):
            assert await loader.list_nodes() == []

    async def test_list_nodes_returns_every_id_sorted(self, make: LoaderFactory) -> None:
        loader = await make(TOUR)
        async with asyncio.timeout(_BOUND):
            ids = await loader.list_nodes()
        assert ids == sorted(d["id"] for d in TOUR)

    async def test_every_listed_id_loads_as_a_node_with_that_id(self, make: LoaderFactory) -> None:
        loader = await make(TOUR)
        async with asyncio.timeout(_BOUND):
            for node_id in await loader.list_nodes():
                assert (await loader.get_node(node_id)).id == node_id

    async def test_repeated_lookups_return_equal_nodes(self, make: LoaderFactory) -> None:
        loader = await make(TOUR)
        async with asyncio.timeout(_BOUND):
            assert await loader.get_node("start") == await loader.get_node("start")

    async def test_the_loader_satisfies_the_port(self, make: LoaderFactory) -> None:
        assert isinstance(await make([]), GraphLoader)

    async def test_concurrent_lookups_agree(self, make: LoaderFactory) -> None:
        loader = await make(TOUR)
        ids = [d["id"] for d in TOUR] * 8
        async with asyncio.timeout(_BOUND):
            nodes = await asyncio.gather(*(loader.get_node(node_id) for node_id in ids))
            alone = {node_id: await loader.get_node(node_id) for node_id in set(ids)}
        assert [node.id for node in nodes] == ids
        assert all(node == alone[node.id] for node in nodes)

    async def test_a_missing_node_raises_node_not_found(self, make: LoaderFactory) -> None:
        loader = await make(TOUR)
        async with asyncio.timeout(_BOUND):
            with pytest.raises(NodeNotFound) as caught:
                await loader.get_node("nowhere")
        assert isinstance(caught.value, NodeLoadError)
        assert caught.value.node_id == "nowhere"

    @pytest.mark.parametrize("node_id", ["../start", "/start", "modules/../start", "", "modules\\..\\start"])
    async def test_ids_that_try_to_leave_the_graph_are_not_found(
        self, make: LoaderFactory, node_id: str
    ) -> None:
        loader = await make(TOUR)
        async with asyncio.timeout(_BOUND):
            with pytest.raises(NodeNotFound):
                await loader.get_node(node_id)

    # --- the file-form sugar --------------------------------------------------------------

    async def test_options_and_to_become_ordered_transitions_and_a_choice(self, make: LoaderFactory) -> None:
        loader = await make(TOUR)
        async with asyncio.timeout(_BOUND):
            start = await loader.get_node("start")
            inputs = await loader.get_node("inputs")
        assert start.type == "text"
        assert start.content == "# Welcome\n"
        assert start.transitions == (Transition("inputs", "input == 'Inputs'"), Transition("choice", ""))
        assert start.input_type == "choice"
        assert start.input_options == ("Inputs",)
        assert inputs.input_default == "Go to End"

    async def test_transition_target_aliases_are_accepted(self, make: LoaderFactory) -> None:
        loader = await make(TOUR)
        async with asyncio.timeout(_BOUND):
            choice = await loader.get_node("choice")
            nested = await loader.get_node("modules/checkout/start")
        assert choice.type == "question"
        assert [t.to_node_id for t in choice.transitions] == ["success", "try-again"]
        assert nested.transitions == (Transition("start", "input == 'Back'"),)

    async def test_tool_calls_signals_and_metadata_are_normalised(self, make: LoaderFactory) -> None:
        loader = await make(
            [
                {
                    "id": "book",
                    "do": {"name": "reserve", "args": {"city": "Paris"}, "metadata": {"retry": {"max": 3}}},
                    "undo": {"name": "cancel", "id": "cancel-1"},
                    "on_signal": {"timeout": "old", "quit": "bye"},
                    "on_timeout": "late",
                    "metadata": {"x-exec": {"command": "uname", "args": ["-s", "-r"]}, "flag": True},
                    "timeout": "1m30s",
                }
            ]
        )
        async with asyncio.timeout(_BOUND):
            node = await loader.get_node("book")
        assert node.do is not None and (node.do.id, node.do.name) == ("reserve", "reserve")
        assert node.do.args == {"city": "Paris"}
        assert node.do.metadata == {"retry-max": "3"}
        assert node.undo is not None and node.undo.id == "cancel-1"
        assert node.on_signal == {"timeout": "late", "quit": "bye"}
        assert node.metadata == {"x-exec-command": "uname", "x-exec-args": "-s -r", "flag": "true"}
        assert node.timeout == "1m30s"

    async def test_a_wrongly_typed_field_is_reported_with_its_name(self, make: LoaderFactory) -> None:
        with pytest.raises(NodeDefinitionError) as caught:
            loader = await make([{"id": "bad", "wait": "true"}])
            async with asyncio.timeout(_BOUND):
                await loader.get_node("bad")
        assert caught.value.field == "wait"
        assert "'wait'" in str(caught.value) and "boolean" in str(caught.value)

    # --- tool libraries (``tools``) ----------------------------------------------------------

    async def test_tool_imports_resolve_depth_first_and_local_tools_shadow_in_place(
        self, make: LoaderFactory
    ) -> None:
        loader = await make(
            [
                {"id": "base", "tools": [{"name": "search"}, {"name": "fetch", "description": "base"}]},
                {"id": "lib", "tools": ["base", {"name": "write"}]},
                {"id": "agent", "tools": ["lib", {"name": "fetch", "description": "local"}, {"name": "own"}]},
            ]
        )
        async with asyncio.timeout(_BOUND):
            agent = await loader.get_node("agent")
        assert [t.name for t in agent.tools] == ["search", "fetch", "write", "own"]
        assert agent.tools[1] == Tool(name="fetch", description="local")

    async def test_a_tool_import_cycle_is_reported(self, make: LoaderFactory) -> None:
        # The importing node is not pre-marked, so a → b → a is caught when b is met again.
        with pytest.raises(NodeDefinitionError, match="cycle detected in tool imports: b"):
            loader = await make([{"id": "a", "tools": ["b"]}, {"id": "b", "tools": ["a"]}])
            async with asyncio.timeout(_BOUND):
                await loader.get_node("a")

    async def test_a_self_import_is_a_cycle(self, make: LoaderFactory) -> None:
        with pytest.raises(NodeDefinitionError, match="cycle detected in tool imports: a"):
            loader = await make([{"id": "a", "tools": ["a"]}])
            async with asyncio.timeout(_BOUND):
                await loader.get_node("a")

    async def test_diamond_imports_are_not_a_cycle(self, make: LoaderFactory) -> None:
        loader = await make(
            [
                {"id": "root", "tools": [{"name": "shared"}]},
                {"id": "left", "tools": ["root", {"name": "l"}]},
                {"id": "right", "tools": ["root", {"name": "r"}]},
                {"id": "top", "tools": ["left", "right"]},
            ]
        )
        async with asyncio.timeout(_BOUND):
            top = await loader.get_node("top")
        assert [t.name for t in top.tools] == ["shared", "l", "r"]

    async def test_a_missing_tool_library_is_named(self, make: LoaderFactory) -> None:
        with pytest.raises(NodeDefinitionError, match="ghost"):
            loader = await make([{"id": "a", "tools": ["ghost"]}])
            async with asyncio.timeout(_BOUND):
                await loader.get_node("a")

    # --- watching ---------------------------------------------------------------------------

    async def _watched(self, make: LoaderFactory, definitions: Sequence[Definition]) -> tuple[Any, Any]:
        """A loader and a watch stream that has been seen to deliver an event."""
        loader = await make(definitions)
        if not isinstance(loader, Watchable):
            pytest.skip("loader is not Watchable")
        stream = loader.watch()
        await asyncio.sleep(0)  # let the loader's background watch task start
        try:
            for attempt in range(int(self.watch_bound / self.retrigger_after) + 1):
                try:
                    await self.put_definition(loader, {"id": _WARMUP_ID, "content": f"warm-up {attempt}"})
                except NotImplementedError:
                    pytest.skip("put_definition/remove_definition hooks not implemented")
                try:
                    async with asyncio.timeout(self.retrigger_after):
                        await anext(stream)
                    return loader, stream
                except TimeoutError:
                    continue
            pytest.fail(f"the watch delivered no event within {self.watch_bound} s of repeated writes")
        except BaseException:
            await _close(stream)
            raise

    async def _change_naming(self, stream: Any, node_id: str) -> GraphChange:
        """The next change that names ``node_id`` (or says "anything may have changed")."""
        async with asyncio.timeout(self.watch_bound):
            while True:
                change = await anext(stream)
                assert isinstance(change, GraphChange)
                if not change.node_ids or node_id in change.node_ids:
                    return change

    async def test_watch_reports_an_added_node(self, make: LoaderFactory) -> None:
        loader, stream = await self._watched(make, TOUR)
        try:
            await self.put_definition(loader, {"id": "extra", "content": "new"})
            await self._change_naming(stream, "extra")
            async with asyncio.timeout(_BOUND):
                assert (await loader.get_node("extra")).content == "new"
                assert "extra" in await loader.list_nodes()
        finally:
            await _close(stream)

    async def test_watch_reports_a_changed_node_and_the_new_definition_is_served(
        self, make: LoaderFactory
    ) -> None:
        loader, stream = await self._watched(make, TOUR)
        try:
            async with asyncio.timeout(_BOUND):
                assert (await loader.get_node("success")).content == "Done"
            await self.put_definition(loader, {"id": "success", "wait": True, "content": "Done again"})
            await self._change_naming(stream, "success")
            async with asyncio.timeout(_BOUND):
                assert (await loader.get_node("success")).content == "Done again"
        finally:
            await _close(stream)

    async def test_watch_reports_a_removed_node(self, make: LoaderFactory) -> None:
        loader, stream = await self._watched(make, TOUR)
        try:
            await self.remove_definition(loader, "try-again")
            await self._change_naming(stream, "try-again")
            async with asyncio.timeout(_BOUND):
                with pytest.raises(NodeNotFound):
                    await loader.get_node("try-again")
                assert "try-again" not in await loader.list_nodes()
        finally:
            await _close(stream)

    async def test_watch_names_the_importers_of_a_changed_tool_library(self, make: LoaderFactory) -> None:
        loader, stream = await self._watched(
            make, [{"id": "lib", "tools": [{"name": "old"}]}, {"id": "agent", "tools": ["lib"]}]
        )
        try:
            await self.put_definition(loader, {"id": "lib", "tools": [{"name": "new"}]})
            change = await self._change_naming(stream, "lib")
            assert not change.node_ids or "agent" in change.node_ids
            async with asyncio.timeout(_BOUND):
                assert [t.name for t in (await loader.get_node("agent")).tools] == ["new"]
        finally:
            await _close(stream)

    async def test_watch_reports_changes_in_the_order_they_were_made(self, make: LoaderFactory) -> None:
        """Changes may be merged into one event, never reordered: a consumer applying events
        in order must end with the newest definitions. Revisions never go down."""
        loader, stream = await self._watched(make, TOUR)
        written = ["order-1", "order-2", "order-3"]
        try:
            for node_id in written:
                await self.put_definition(loader, {"id": node_id, "content": node_id})
            first_seen: dict[str, int] = {}
            revisions: list[int] = []
            async with asyncio.timeout(self.watch_bound):
                while len(first_seen) < len(written):
                    change = await anext(stream)
                    revisions.append(change.revision)
                    for node_id in written:
                        if node_id not in first_seen and (not change.node_ids or node_id in change.node_ids):
                            first_seen[node_id] = len(revisions)
        finally:
            await _close(stream)
        order = [first_seen[node_id] for node_id in written]
        assert order == sorted(order), f"events named {written} in the order of event numbers {order}"
        assert revisions == sorted(revisions), f"event revisions went down: {revisions}"

    async def test_a_new_watch_reports_changes_after_an_earlier_one_was_closed(
        self, make: LoaderFactory
    ) -> None:
        """Closing one watch (a consumer that went away, a reconnect) must not end the loader's
        watching: the next watch resumes reporting changes."""
        loader, stream = await self._watched(make, TOUR)
        await _close(stream)
        resumed = loader.watch()
        await asyncio.sleep(0)
        try:
            for attempt in range(int(self.watch_bound / self.retrigger_after) + 1):
                await self.put_definition(loader, {"id": "resumed", "content": f"again {attempt}"})
                try:
                    async with asyncio.timeout(self.retrigger_after):
                        await self._change_naming(resumed, "resumed")
                    break
                except TimeoutError:
                    continue
            else:
                pytest.fail(f"a second watch delivered no event within {self.watch_bound} s of writes")
            async with asyncio.timeout(_BOUND):
                assert (await loader.get_node("resumed")).content.startswith("again")
        finally:
            await _close(resumed)
