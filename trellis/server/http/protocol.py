"""The Connect protocol's wire pieces (connectrpc.com/docs/protocol), as far as
trellis serves it: unary and server-streaming calls, JSON and binary protobuf.

* unary: ``POST /trellis.v1.Sessions/Start`` with ``Content-Type: application/json``
  (or ``application/proto``); the reply body is the message, an error is a JSON
  object with an HTTP status derived from its code.
* server streaming: ``Content-Type: application/connect+json`` (or ``+proto``);
  request and reply messages are enveloped (1 flag byte, 4-byte big-endian
  length); the last envelope (flag 0x02) is a JSON end-of-stream holding the
  error, if any.

An error's ``details`` carry the error table's google.rpc.ErrorInfo as Connect
details do (type name, base64 protobuf) plus its JSON form under ``debug``, so
a curl user reads the reason and metadata without decoding anything.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]
import orjson
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

from trellis.errors import InvalidInput

JSON = "json"
PROTO = "proto"

UNARY_TYPES = {"application/json": JSON, "application/proto": PROTO}
STREAM_TYPES = {"application/connect+json": JSON, "application/connect+proto": PROTO}

END_STREAM = 0x02
COMPRESSED = 0x01
_ENVELOPE = struct.Struct(">BI")
ENVELOPE_BYTES = _ENVELOPE.size

# Connect-Timeout-Ms: "positive integer, at most 10 digits" (the protocol's own bound).
MAX_TIMEOUT_DIGITS = 10

# The protocol's table from codes to HTTP statuses (unary errors only; streams answer 200).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def code_name(code: grpc.StatusCode) -> str:
    """Connect's name of a code: the gRPC name in lower case (``not_found``)."""
    return str(code.name).lower()


@dataclass(frozen=True, slots=True)
class CallError:
    """A failed call as Connect reports it."""

    code: grpc.StatusCode
    message: str
    status_details: bytes = b""  # a serialized google.rpc.Status (the error table's), or none

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": code_name(self.code)}
        if self.message:
            body["message"] = self.message
        details = _details(self.status_details)
        if details:
            body["details"] = details
        return body

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def _details(status_details: bytes) -> list[dict[str, Any]]:
    if not status_details:
        return []
    status = status_pb2.Status()
    try:
        status.ParseFromString(status_details)
    except Exception:  # the server's own bytes; a broken one is reported without details
        return []
    out: list[dict[str, Any]] = []
    for item in status.details:
        entry: dict[str, Any] = {
            "type": item.type_url.rpartition("/")[2],
            # Connect: standard base64, padding optional; connect clients take it unpadded
            "value": base64.b64encode(item.value).decode().rstrip("="),
        }
        if item.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            item.Unpack(info)
            entry["debug"] = json_format.MessageToDict(info)
        out.append(entry)
    return out


def parse_timeout(value: str | None) -> float | None:
    """Seconds from a Connect-Timeout-Ms header (None: no deadline)."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > MAX_TIMEOUT_DIGITS:
        raise InvalidInput(
            f"Connect-Timeout-Ms: {value[:20]!r} is not a positive integer of at most "
            f"{MAX_TIMEOUT_DIGITS} digits"
        )
    return int(text) / 1000.0


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return _ENVELOPE.pack(flags, len(payload)) + payload


def end_stream(error: CallError | None) -> bytes:
    body: dict[str, Any] = {}
    if error is not None:
        body["error"] = error.to_json()
    return envelope(orjson.dumps(body), END_STREAM)


def unwrap_single(body: bytes) -> bytes:
    """The one message of a streaming call's request body (exactly one envelope)."""
    if len(body) < ENVELOPE_BYTES:
        raise InvalidInput(f"request body: {len(body)} bytes is shorter than one envelope")
    flags, length = _ENVELOPE.unpack_from(body)
    if flags & COMPRESSED:
        raise InvalidInput("request body: compressed envelopes are not accepted")
    if len(body) != ENVELOPE_BYTES + length:
        raise InvalidInput(
            f"request body: the envelope announces {length} bytes but {len(body) - ENVELOPE_BYTES} "
            "follow (a server-streaming call takes exactly one message)"
        )
    return body[ENVELOPE_BYTES:]


def decode(message_class: Any, payload: bytes, codec: str) -> Any:
    """A request message from its body; InvalidInput naming the type when it does not parse."""
    name = message_class.DESCRIPTOR.full_name
    message = message_class()
    try:
        if codec == JSON:
            json_format.Parse(payload.decode("utf-8") or "{}", message)
        else:
            message.ParseFromString(payload)
    except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise InvalidInput(f"request body: not a valid {name} in {codec.upper()}: {reason}") from None
    except Exception as exc:  # protobuf's DecodeError and whatever else its runtime raises
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InvalidInput(f"request body: not a valid {name} in {codec.upper()}: {reason}") from None
    return message


def encode(message: Any, codec: str) -> bytes:
    if codec == JSON:
        return orjson.dumps(json_format.MessageToDict(message))
    return bytes(message.SerializeToString())


def to_json_object(message: Any) -> dict[str, Any]:
    """A message in the protobuf JSON mapping (camelCase names, defaults left out)."""
    result: dict[str, Any] = json_format.MessageToDict(message)
    return result
