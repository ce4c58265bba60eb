"""EtcdGraphLoader passes the public GraphLoader contract against a real etcd;
definitions reach it the way users publish them: files in a directory, pushed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.etcd_fixtures import config_for
from tests.support.etcd_process import EtcdCluster
from trellis.adapters.etcd import EtcdClient, EtcdGraphLoader
from trellis.adapters.etcd.publish import publish
from trellis.contracts.loader import Definition, GraphLoaderContract
from trellis.ports.loader import GraphLoader


def write_definition(directory: Path, definition: Definition) -> None:
    path = directory / f"{definition['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(definition))


class TestEtcdGraphLoaderContract(GraphLoaderContract):
    @pytest.fixture(autouse=True)
    def _etcd(self, etcd_server: EtcdCluster) -> None:
        self.cluster = etcd_server
        self.directories: dict[int, Path] = {}

    async def make_loader(self, tmp_path: Path, definitions: Sequence[Definition]) -> GraphLoader:
        client = EtcdClient(config_for(self.cluster))
        try:
            for definition in definitions:
                write_definition(tmp_path, definition)
            await publish(client, "flow", tmp_path)
        except BaseException:
            await client.close()
            raise
        loader = EtcdGraphLoader(client, "flow")
        self.directories[id(loader)] = tmp_path
        return loader

    async def close_loader(self, loader: GraphLoader) -> None:
        assert isinstance(loader, EtcdGraphLoader)
        await loader.aclose()
        await loader.client.close()

    async def put_definition(self, loader: GraphLoader, definition: Definition) -> None:
        assert isinstance(loader, EtcdGraphLoader)
        directory = self.directories[id(loader)]
        write_definition(directory, definition)
        await publish(loader.client, loader.name, directory)

    async def remove_definition(self, loader: GraphLoader, node_id: str) -> None:
        assert isinstance(loader, EtcdGraphLoader)
        directory = self.directories[id(loader)]
        (directory / f"{node_id}.json").unlink()
        await publish(loader.client, loader.name, directory)
