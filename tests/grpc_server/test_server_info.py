"""ServerInfo.GetServerInfo tells a client the server's version, API revision, limits and
features; reflection answers in both versions (v1 and v1alpha) with the proto comments."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

import trellis
from tests.support.grpc_server import running
from trellis.api import API_REVISION
from trellis.api.v1 import server_info_pb2, server_info_pb2_grpc
from trellis.server.config import ServerConfig

REFLECTION_METHODS = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)


async def test_server_info_reports_the_configured_limits_and_features(flow: Path, tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    key.write_text("a-signing-key-of-some-length-0123456789")
    config = ServerConfig(
        flow_dir=str(flow), max_input_bytes=2048, max_watch_streams=7, signing_key_file=str(key)
    )
    async with running(config) as (_server, channel):
        info = await server_info_pb2_grpc.ServerInfoStub(channel).GetServerInfo(
            server_info_pb2.GetServerInfoRequest()
        )
    assert info.server_version == trellis.__version__ and info.api_revision == API_REVISION
    assert {"trellis.v1.Sessions", "trellis.v1.Engine", "trellis.v1.ServerInfo"} <= set(info.services)
    assert "trellis.v1.StateStore" not in info.services
    limits = info.limits
    assert (limits.max_input_bytes, limits.max_watch_streams) == (2048, 7)
    assert (limits.default_page_size, limits.max_page_size, limits.max_session_id_bytes) == (100, 1000, 200)
    assert limits.max_message_bytes == 4 * 1024 * 1024 and limits.max_stream_steps == 64
    assert 0 < limits.max_state_bytes < limits.max_message_bytes
    features = info.features
    assert features.state_signing and not features.auth_required and not features.tls
    assert (features.store, features.loader) == ("memory", "dir") and features.hot_reload
    # Kinds only: nothing of where the flow or the key lives.
    assert str(flow) not in str(info) and str(key) not in str(info)


async def _reflect(
    channel: grpc.aio.Channel, method: str, **request: str
) -> reflection_pb2.ServerReflectionResponse:
    call = channel.stream_stream(
        method,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )()
    await call.write(reflection_pb2.ServerReflectionRequest(**request))
    await call.done_writing()
    response = await call.read()
    call.cancel()
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    return response


def _files(
    response: reflection_pb2.ServerReflectionResponse,
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    protos = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    return {proto.name: proto for proto in protos}


def _comments(proto: descriptor_pb2.FileDescriptorProto) -> str:
    return "\n".join(loc.leading_comments for loc in proto.source_code_info.location)


async def test_both_reflection_versions_list_the_services_and_serve_commented_descriptors(served) -> None:
    _, channel = served
    for method in REFLECTION_METHODS:
        listed = await _reflect(channel, method, list_services="")
        names = {s.name for s in listed.list_services_response.service}
        assert {"trellis.v1.Sessions", "trellis.v1.ServerInfo", "grpc.health.v1.Health"} <= names, method
        assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= names
        files = _files(await _reflect(channel, method, file_containing_symbol="trellis.v1.Sessions"))
        sessions = files["trellis/v1/sessions.proto"]
        # The dependencies come along, so a client can build the whole API from reflection alone.
        assert {"trellis/v1/types.proto", "google/protobuf/duration.proto"} <= set(files)
        assert "Durable, server-side sessions." in _comments(sessions), method
        assert sessions.options.go_package.startswith("trellis.dev/")
    # A v1 client can describe the v1 reflection service itself.
    itself = "grpc.reflection.v1.ServerReflection"
    v1 = _files(await _reflect(channel, REFLECTION_METHODS[0], file_containing_symbol=itself))
    assert v1["grpc/reflection/v1/reflection.proto"].package == "grpc.reflection.v1"
    missing = await _reflect(channel, REFLECTION_METHODS[0], file_containing_symbol="trellis.v1.Nope")
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
