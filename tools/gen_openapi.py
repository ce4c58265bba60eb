"""Write the OpenAPI description of the HTTP listener's JSON routes from the protos.

    .venv/bin/python tools/gen_openapi.py            # writes docs/openapi.json
    .venv/bin/python tools/gen_openapi.py OUT.json   # writes elsewhere (the staleness check)

Compiled from protos/trellis/v1/*.proto with their comments (protoc's source info),
so the description says what the protos say. One POST route per unary method of the
public services (Connect unary calls with a JSON body), the Connect streaming routes
(enveloped JSON; described, not typed), and the server-sent events route. Schemas follow
protobuf's JSON mapping: lowerCamel field names, 64-bit integers as strings, enums by
name, Duration as "1.5s", bytes as base64. tests/http/test_openapi.py fails when the
committed file is not what this script writes now.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
OUT = ROOT / "docs" / "openapi.json"
PACKAGE = "trellis.v1"
# What the public listener serves (trellis.server.app); StateStore and ActionDispatcher
# are internal and never on it. tests/http/test_openapi.py checks this against a server.
PUBLIC_SERVICES = ("Engine", "Sessions", "GraphLoader", "ServerInfo")

FDP = descriptor_pb2.FieldDescriptorProto
SCALARS: dict[int, dict[str, Any]] = {
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # the JSON mapping writes 64-bit integers as strings (JavaScript numbers lose digits)
    FDP.TYPE_INT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SINT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FDP.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FDP.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Duration": {"type": "string", "description": 'a duration in seconds: "1.5s"'},
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
}

CONNECT_ERROR = {
    "type": "object",
    "description": "A Connect error: the code, the message, and the error table's "
    "google.rpc.ErrorInfo (reason, domain trellis.dev, metadata) as a detail; `debug` is its JSON form.",
    "required": ["code"],
    "properties": {
        "code": {
            "type": "string",
            "enum": [
                "canceled",
                "unknown",
                "invalid_argument",
                "deadline_exceeded",
                "not_found",
                "already_exists",
                "permission_denied",
                "resource_exhausted",
                "failed_precondition",
                "aborted",
                "out_of_range",
                "unimplemented",
                "internal",
                "unavailable",
                "data_loss",
                "unauthenticated",
            ],
        },
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "example": "google.rpc.ErrorInfo"},
                    "value": {"type": "string", "format": "byte"},
                    "debug": {
                        "type": "object",
                        "properties": {
                            "reason": {"type": "string", "example": "SESSION_NOT_FOUND"},
                            "domain": {"type": "string", "example": "trellis.dev"},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}


def compile_protos() -> descriptor_pb2.FileDescriptorSet:
    include = Path(protoc.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "trellis" / "v1").glob("*.proto"))
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "set.binpb"
        status = protoc.main(
            [
                "protoc",
                f"-I{PROTOS}",
                f"-I{include}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *files,
            ]
        )
        if status != 0:
            raise SystemExit(f"protoc failed ({status})")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


class Spec:
    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, tuple[descriptor_pb2.DescriptorProto, str]] = {}
        self.enums: dict[str, tuple[descriptor_pb2.EnumDescriptorProto, str]] = {}
        self.services: dict[str, tuple[descriptor_pb2.ServiceDescriptorProto, dict[int, str]]] = {}
        self._field_comments: dict[str, dict[str, str]] = {}
        for file in files.file:
            comments = _comments(file)
            for index, message in enumerate(file.message_type):
                self._add_message(message, f".{file.package}", comments, (4, index))
            for index, enum in enumerate(file.enum_type):
                self.enums[f".{file.package}.{enum.name}"] = (enum, comments.get((5, index), ""))
            for index, service in enumerate(file.service):
                methods = {m: comments.get((6, index, 2, m), "") for m in range(len(service.method))}
                methods[-1] = comments.get((6, index), "")
                self.services[service.name] = (service, methods)
        self.schemas: dict[str, Any] = {}

    def _add_message(
        self,
        message: descriptor_pb2.DescriptorProto,
        scope: str,
        comments: dict[tuple[int, ...], str],
        path: tuple[int, ...],
    ) -> None:
        name = f"{scope}.{message.name}"
        self.messages[name] = (message, comments.get(path, ""))
        self._field_comments[name] = {
            field.name: comments.get((*path, 2, index), "") for index, field in enumerate(message.field)
        }
        for index, nested in enumerate(message.nested_type):
            self._add_message(nested, name, comments, (*path, 3, index))
        for index, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = (enum, comments.get((*path, 4, index), ""))

    def ref(self, type_name: str) -> dict[str, Any]:
        if type_name in WELL_KNOWN:
            return dict(WELL_KNOWN[type_name])
        key = type_name.removeprefix(f".{PACKAGE}.")
        if key not in self.schemas:
            self.schemas[key] = {}  # placeholder: recursive messages refer to themselves
            self.schemas[key] = self._schema(type_name)
        return {"$ref": f"#/components/schemas/{key}"}

    def _schema(self, type_name: str) -> dict[str, Any]:
        if type_name in self.enums:
            enum, comment = self.enums[type_name]
            schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in enum.value]}
            return _described(schema, comment)
        message, comment = self.messages[type_name]
        properties: dict[str, Any] = {}
        for field in message.field:
            properties[field.json_name] = _described(
                self._field(field), self._field_comments[type_name][field.name]
            )
        return _described({"type": "object", "properties": properties}, comment)

    def _field(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type == FDP.TYPE_MESSAGE:
            entry = self.messages.get(field.type_name)
            if entry is not None and entry[0].options.map_entry:
                value = next(f for f in entry[0].field if f.name == "value")
                return {"type": "object", "additionalProperties": self._single(value)}
        single = self._single(field)
        if field.label == FDP.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single

    def _single(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
            return self.ref(field.type_name)
        return dict(SCALARS[field.type])

    def document(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for service_name in PUBLIC_SERVICES:
            service, comments = self.services[service_name]
            for index, method in enumerate(service.method):
                if method.client_streaming:
                    continue  # Sessions.Steps: gRPC only (the gateway serves no client streams)
                route = f"/{PACKAGE}.{service.name}/{method.name}"
                paths[route] = {"post": self._operation(service.name, method, comments[index])}
        paths["/v1/sessions/{sessionId}/events"] = {"get": EVENTS_OPERATION}
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "trellis HTTP API (Connect protocol, JSON)",
                "version": "v1",
                "description": "The trellis.v1 public services over the Connect protocol, as served on "
                "http_listen (docs/http.md). Generated by tools/gen_openapi.py from protos/trellis/v1; "
                "do not edit.",
            },
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                "schemas": {**dict(sorted(self.schemas.items())), "ConnectError": CONNECT_ERROR},
            },
            "security": [{}, {"bearer": []}],
            "paths": paths,
        }

    def _operation(self, service: str, method: descriptor_pb2.MethodDescriptorProto, comment: str) -> Any:
        operation: dict[str, Any] = {
            "operationId": f"{service}_{method.name}",
            "tags": [service],
            "summary": comment.split("\n")[0] if comment else f"{service}.{method.name}",
            "parameters": [
                {
                    "name": "Connect-Timeout-Ms",
                    "in": "header",
                    "required": False,
                    "description": "the call's deadline in milliseconds",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
                }
            ],
        }
        if comment:
            operation["description"] = comment
        error = {"description": "a Connect error", "content": {"application/json": CONNECT_ERROR_REF}}
        if method.server_streaming:
            operation["description"] = (
                (comment + "\n\n" if comment else "")
                + "Server streaming: Content-Type application/connect+json; the request body is one "
                "enveloped message (1 flag byte, 4-byte big-endian length, JSON), the reply a sequence "
                f"of enveloped {method.output_type.rsplit('.', 1)[1]} messages ending with an "
                "end-of-stream envelope (flag 2) holding the error, if any."
            )
            self.ref(method.input_type)
            self.ref(method.output_type)
            operation["requestBody"] = {
                "required": True,
                "content": {"application/connect+json": {"schema": {"type": "string", "format": "binary"}}},
            }
            operation["responses"] = {
                "200": {
                    "description": "the stream",
                    "content": {
                        "application/connect+json": {"schema": {"type": "string", "format": "binary"}}
                    },
                }
            }
            return operation
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": self.ref(method.input_type)}},
        }
        operation["responses"] = {
            "200": {
                "description": "the reply",
                "content": {"application/json": {"schema": self.ref(method.output_type)}},
            },
            "default": error,
        }
        return operation


CONNECT_ERROR_REF = {"schema": {"$ref": "#/components/schemas/ConnectError"}}
EVENTS_OPERATION = {
    "operationId": "Sessions_Events",
    "tags": ["Sessions"],
    "summary": "A session's changes as server-sent events",
    "description": "Event `step` (a Step: the session now), then one event `diff` (a StateDiff) per "
    "committed step until the caller hangs up; an error after the stream opened is an event "
    "`error` (a ConnectError). Sessions.Watch over server-sent events.",
    "parameters": [{"name": "sessionId", "in": "path", "required": True, "schema": {"type": "string"}}],
    "responses": {
        "200": {
            "description": "the event stream",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        "default": {"description": "a Connect error", "content": {"application/json": CONNECT_ERROR_REF}},
    },
}


def _described(schema: dict[str, Any], comment: str) -> dict[str, Any]:
    if comment and "$ref" not in schema:
        schema["description"] = comment
    elif comment:
        return {"allOf": [schema], "description": comment}
    return schema


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    out: dict[tuple[int, ...], str] = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text.strip():
            out[tuple(location.path)] = " ".join(line.strip() for line in text.strip().splitlines()).strip()
    return out


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else OUT
    spec = Spec(compile_protos())
    text = json.dumps(spec.document(), indent=2, ensure_ascii=False) + "\n"
    out.write_text(text, encoding="utf-8")
    print(f"gen_openapi: wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
