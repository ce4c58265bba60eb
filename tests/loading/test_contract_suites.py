"""The public GraphLoader contract, run against the in-process loaders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tests.loading.writers import remove_definition, write_definition
from trellis.adapters.directory_loader import DirectoryLoader
from trellis.adapters.memory_loader import MemoryLoader
from trellis.contracts.loader import GraphLoaderContract
from trellis.ports.loader import GraphLoader


class TestMemoryLoaderContract(GraphLoaderContract):
    async def make_loader(self, tmp_path: Path, definitions: Sequence[Mapping[str, Any]]) -> GraphLoader:
        return MemoryLoader(definitions)

    async def close_loader(self, loader: GraphLoader) -> None:
        assert isinstance(loader, MemoryLoader)
        loader.close()

    async def put_definition(self, loader: GraphLoader, definition: Mapping[str, Any]) -> None:
        assert isinstance(loader, MemoryLoader)
        loader.put(definition)

    async def remove_definition(self, loader: GraphLoader, node_id: str) -> None:
        assert isinstance(loader, MemoryLoader)
        loader.remove(node_id)


class TestDirectoryLoaderJsonContract(GraphLoaderContract):
    extension: ClassVar[str] = ".json"

    async def make_loader(self, tmp_path: Path, definitions: Sequence[Mapping[str, Any]]) -> GraphLoader:
        for definition in definitions:
            write_definition(tmp_path, definition, self.extension)
        return DirectoryLoader(tmp_path)

    async def close_loader(self, loader: GraphLoader) -> None:
        assert isinstance(loader, DirectoryLoader)
        await loader.aclose()

    async def put_definition(self, loader: GraphLoader, definition: Mapping[str, Any]) -> None:
        assert isinstance(loader, DirectoryLoader)
        write_definition(loader.root, definition, self.extension)

    async def remove_definition(self, loader: GraphLoader, node_id: str) -> None:
        assert isinstance(loader, DirectoryLoader)
        remove_definition(loader.root, node_id)


class TestDirectoryLoaderMarkdownContract(TestDirectoryLoaderJsonContract):
    extension: ClassVar[str] = ".md"


class TestDirectoryLoaderYamlContract(TestDirectoryLoaderJsonContract):
    extension: ClassVar[str] = ".yaml"
