"""Server reflection, both versions: grpc.reflection.v1 (what current grpcurl, Postman
and most client tools ask first) and grpc.reflection.v1alpha (what older ones ask).

grpcio-reflection ships only v1alpha. v1 is the same protocol under another
package name (the messages are field for field the same on the wire), so one
servicer using v1alpha's message classes answers both, and the v1 descriptor is
v1alpha's, renamed, so a v1 client can describe it too.

The servicer is this module's rather than grpcio-reflection's because that one
re-serializes descriptors from the *_pb2 modules, which drop the proto comments;
the files served here are trellis/api/v1/descriptors.binpb (scripts/gen-protos),
comments included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from trellis.server.reflection_pool import MethodResolvingPool

V1ALPHA = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name
V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's reflection.proto under v1's file and package names."""
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{reflection_pb2.DESCRIPTOR.package}.", ".grpc.reflection.v1."
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")

    def rename(messages: Any) -> None:
        for message in messages:
            for field in message.field:
                if field.type_name.startswith(old):
                    field.type_name = new + field.type_name[len(old) :]
            rename(message.nested_type)

    rename(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    return proto


class _Files:
    """The trellis API (with comments and its imports), health and both reflections: a
    pool to find symbols in and the serialized files (with comments) to send."""

    def __init__(self) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self.raw: dict[str, bytes] = {}
        data = resources.files("trellis.api.v1").joinpath("descriptors.binpb").read_bytes()
        protos = list(descriptor_pb2.FileDescriptorSet.FromString(data).file)
        for module in (health_pb2, reflection_pb2):
            proto = descriptor_pb2.FileDescriptorProto()
            module.DESCRIPTOR.CopyToProto(proto)
            protos.append(proto)
        protos.append(_v1_file())
        for proto in protos:
            self.pool.Add(proto)
            self.raw[proto.name] = proto.SerializeToString()
        self.by_symbol = MethodResolvingPool(self.pool)

    def with_dependencies(self, name: str) -> list[bytes]:
        """The file and everything it imports, transitively, the file first."""
        seen: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop(0)
            if current in seen:
                continue
            seen.append(current)
            pending.extend(dep.name for dep in self.pool.FindFileByName(current).dependencies)
        return [self.raw[file] for file in seen]


_FILES: _Files | None = None


def _files() -> _Files:
    global _FILES
    if _FILES is None:  # built once per process
        _FILES = _Files()
    return _FILES


class Reflection:
    """One servicer for both versions: ServerReflectionInfo answers each request of the
    stream in order (list_services, file_by_filename, file_containing_symbol; extensions:
    the API declares none)."""

    def __init__(self, services: list[str]) -> None:
        self._services = sorted(services)
        self._files = _files()

    async def ServerReflectionInfo(self, requests: Any, context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            yield self._answer(request)

    def _answer(self, request: Any) -> Any:
        kind = request.WhichOneof("message_request")
        response = reflection_pb2.ServerReflectionResponse(
            valid_host=request.host, original_request=request
        )
        try:
            if kind == "list_services":
                response.list_services_response.service.extend(
                    reflection_pb2.ServiceResponse(name=name) for name in self._services
                )
            elif kind == "file_by_filename":
                files = self._files.with_dependencies(request.file_by_filename)
                response.file_descriptor_response.file_descriptor_proto.extend(files)
            elif kind == "file_containing_symbol":
                # A method's name too (grpcurl describe trellis.v1.Sessions.Start).
                file = self._files.by_symbol.FindFileContainingSymbol(request.file_containing_symbol)
                files = self._files.with_dependencies(file.name)
                response.file_descriptor_response.file_descriptor_proto.extend(files)
            else:  # extensions: none in this API
                raise KeyError(kind)
        except KeyError:
            response.ClearField("list_services_response")
            response.error_response.error_code = grpc.StatusCode.NOT_FOUND.value[0]
            response.error_response.error_message = f"not found: {kind}"
        return response


def enable_reflection(services: list[str], server: Any) -> None:
    """Serve both reflection versions on ``server``, listing ``services`` and themselves."""
    servicer = Reflection([*services, V1, V1ALPHA])
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in (V1ALPHA, V1):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": method}),)
        )
