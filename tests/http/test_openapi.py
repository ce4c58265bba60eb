"""docs/openapi.json is what tools/gen_openapi.py writes from the protos now, and it
describes what the HTTP listener serves: the same routes, and the field names its
replies use."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.support.cli import ROOT, copy_example
from tests.support.servers import flow_server
from trellis.api.v1 import engine_pb2, graph_pb2, sessions_pb2

COMMITTED = ROOT / "docs" / "openapi.json"


def test_the_committed_description_is_what_the_generator_writes(tmp_path: Path) -> None:
    fresh = tmp_path / "openapi.json"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_openapi.py"), str(fresh)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert fresh.read_bytes() == COMMITTED.read_bytes(), (
        "docs/openapi.json is stale: run .venv/bin/python tools/gen_openapi.py and commit it"
    )


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_reference_resolves() -> None:
    document = orjson.loads(COMMITTED.read_bytes())
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rpartition("/")[2] in schemas, ref


def _check(value: Any, schema: dict[str, Any], schemas: dict[str, Any], where: str) -> None:
    """Field names and JSON types of a reply against its schema (enough to catch drift)."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rpartition("/")[2]]
    if "allOf" in schema:
        schema = schema["allOf"][0]
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rpartition("/")[2]]
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        assert isinstance(value, dict), where
        for key, item in value.items():
            assert key in schema["properties"], f"{where}.{key} is not in the description"
            _check(item, schema["properties"][key], schemas, f"{where}.{key}")
    elif kind == "array":
        assert isinstance(value, list), where
        for index, item in enumerate(value):
            _check(item, schema["items"], schemas, f"{where}[{index}]")
    elif kind == "string":
        assert isinstance(value, str), where
        if "enum" in schema:
            assert value in schema["enum"], where
    elif kind == "boolean":
        assert isinstance(value, bool), where
    elif kind == "integer":
        assert isinstance(value, int), where


async def test_the_description_matches_what_the_listener_serves(tmp_path: Path) -> None:
    document = orjson.loads(COMMITTED.read_bytes())
    schemas = document["components"]["schemas"]
    tour = copy_example("tour", tmp_path)
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        described = {path for path in document["paths"] if path.startswith("/trellis.v1.")}
        public = {
            f"/{service.full_name}/{method.name}"
            for module in (engine_pb2, sessions_pb2, graph_pb2)
            for service in module.DESCRIPTOR.services_by_name.values()
            for method in service.methods
        }
        assert described == public
        base = f"http://127.0.0.1:{server.http_port}"
        async with aiohttp.ClientSession() as http:
            # Every described route is served (a wrong content type: 415, not 404), and the
            # internal services are neither described nor served.
            for path in [*described, "/trellis.v1.StateStore/Load", "/trellis.v1.ActionDispatcher/Dispatch"]:
                async with http.post(base + path, data=b"", headers={"Content-Type": "text/plain"}) as reply:
                    assert reply.status == (415 if path in described else 404), path
            for path, body in (
                ("/trellis.v1.Sessions/Start", {"sessionId": "d"}),
                ("/trellis.v1.Sessions/Navigate", {"sessionId": "d", "input": {"text": "Di"}}),
                ("/trellis.v1.Sessions/List", {}),
                ("/trellis.v1.GraphLoader/GetNode", {"nodeId": "drink"}),
                ("/trellis.v1.Sessions/Get", {"sessionId": "missing"}),
            ):
                async with http.post(
                    base + path, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
                ) as reply:
                    value = orjson.loads(await reply.read())
                    status = "200" if reply.status == 200 else "default"
                schema = document["paths"][path]["post"]["responses"][status]["content"]["application/json"]
                _check(value, schema["schema"], schemas, path)
