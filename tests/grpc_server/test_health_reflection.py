"""Health per service (NOT_SERVING while a backend is unreachable) and server reflection."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.grpc_server import internal_channel, running
from trellis.errors import BackendUnavailable
from trellis.server.compose import build_composition
from trellis.server.config import ServerConfig
from trellis.server.observe import Observer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def status(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status


async def test_every_service_is_serving_on_the_embedded_default(served, internal) -> None:
    _, channel = served
    for service in ("", "trellis.v1.Engine", "trellis.v1.Sessions", "trellis.v1.GraphLoader"):
        assert await status(channel, service) == SERVING, service
    for service in ("", "trellis.v1.StateStore", "trellis.v1.ActionDispatcher"):
        assert await status(internal, service) == SERVING, service


async def test_services_needing_an_unreachable_backend_are_not_serving(flow: Path) -> None:
    config = ServerConfig(flow_dir=str(flow), health_probe_interval=0.05, internal_listen="127.0.0.1:0")
    observer = Observer()
    ports = await build_composition(config, observer)
    reachable = asyncio.Event()

    async def store_probe() -> None:  # a store whose backend is down until told otherwise
        if not reachable.is_set():
            raise BackendUnavailable("store backend at 127.0.0.1:1 refused the connection")

    ports.probes["store"] = store_probe
    try:
        async with running(config, ports=ports) as (server, channel), internal_channel(server) as internal:
            assert await status(internal, "trellis.v1.StateStore") == NOT_SERVING
            assert await status(channel, "trellis.v1.Sessions") == NOT_SERVING
            assert await status(channel, "trellis.v1.Engine") == SERVING
            assert await status(channel, "trellis.v1.GraphLoader") == SERVING
            reachable.set()
            for _ in range(200):  # the probe loop notices the recovery (bounded)
                if await status(internal, "trellis.v1.StateStore") == SERVING:
                    break
                await asyncio.sleep(0.02)
            assert await status(channel, "trellis.v1.Sessions") == SERVING
    finally:
        await ports.aclose()


async def test_the_loader_is_not_serving_while_its_directory_is_gone(flow: Path) -> None:
    config = ServerConfig(flow_dir=str(flow), health_probe_interval=0.05, internal_listen="127.0.0.1:0")
    async with running(config) as (server, channel), internal_channel(server) as internal:
        assert await status(channel, "trellis.v1.GraphLoader") == SERVING
        moved = flow.with_name("moved-away")
        await asyncio.to_thread(flow.rename, moved)
        try:
            for _ in range(200):  # bounded: until the probe loop notices
                if await status(channel, "trellis.v1.GraphLoader") == NOT_SERVING:
                    break
                await asyncio.sleep(0.02)
            assert await status(channel, "trellis.v1.Engine") == NOT_SERVING
            assert await status(internal, "trellis.v1.StateStore") == SERVING
        finally:
            await asyncio.to_thread(moved.rename, flow)
        for _ in range(200):
            if await status(channel, "trellis.v1.GraphLoader") == SERVING:
                break
            await asyncio.sleep(0.02)
        assert await status(channel, "trellis.v1.Engine") == SERVING


async def _reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
    await call.write(request)
    await call.done_writing()
    response = await call.read()
    call.cancel()
    return response


async def _listed(channel: grpc.aio.Channel) -> set[str]:
    listed = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    return {s.name for s in listed.list_services_response.service}


async def test_reflection_lists_every_service_and_serves_their_descriptors(served, internal) -> None:
    _, channel = served
    public = await _listed(channel)
    assert {"trellis.v1.Engine", "trellis.v1.Sessions", "trellis.v1.GraphLoader"} <= public
    assert "grpc.health.v1.Health" in public
    assert not {"trellis.v1.StateStore", "trellis.v1.ActionDispatcher"} & public
    inside = await _listed(internal)
    assert {"trellis.v1.StateStore", "trellis.v1.ActionDispatcher", "grpc.health.v1.Health"} <= inside
    assert "trellis.v1.Sessions" not in inside
    described = await _reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="trellis.v1.Sessions")
    )
    assert described.file_descriptor_response.file_descriptor_proto


async def test_an_unreachable_backend_is_logged_with_a_reason(
    flow: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ServerConfig(flow_dir=str(flow))
    ports = await build_composition(config, Observer())

    async def silent_failure() -> None:  # an exception without a message
        raise ConnectionResetError()

    ports.probes["loader"] = silent_failure
    caplog.set_level(logging.WARNING, logger="trellis.server")
    try:
        async with running(config, ports=ports):
            pass
    finally:
        await ports.aclose()
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert lines and all(not line.rstrip().endswith(":") for line in lines), lines
    assert "backend loader unreachable: ConnectionResetError" in lines


async def _file_of(channel: grpc.aio.Channel, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
    reply = await _reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]


async def test_reflection_resolves_every_method_of_every_service(served, internal) -> None:
    # What `grpcurl describe trellis.v1.Sessions.Start` asks: the file holding a method.
    for channel in (served[1], internal):
        for service in sorted(await _listed(channel)):
            if not service.startswith("trellis.v1."):
                continue
            (described, *_) = await _file_of(channel, service)
            methods = next(s.method for s in described.service if f"trellis.v1.{s.name}" == service)
            assert methods, service
            for method in methods:
                files = await _file_of(channel, f"{service}.{method.name}")
                assert files, f"{service}.{method.name} not resolved"
                assert any(
                    f"trellis.v1.{s.name}" == service and method.name in {m.name for m in s.method}
                    for s in files[0].service
                ), f"{service}.{method.name}: the file does not declare it"


async def test_reflection_still_answers_not_found_for_an_unknown_method(served) -> None:
    _, channel = served
    for symbol in ("trellis.v1.Sessions.Teleport", "trellis.v1.NoSuchService.Start", "trellis.v1.Sessions."):
        reply = await _reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0], symbol
