"""The gRPC-Web protocol's wire pieces (github.com/grpc/grpc/blob/master/doc/PROTOCOL-WEB.md),
for browsers using a gRPC-Web client (@connectrpc/connect-web's createGrpcWebTransport,
grpc-web): the request is one enveloped message, the reply its enveloped messages then a
trailer frame (flag 0x80) holding grpc-status, grpc-message and the error table's
grpc-status-details-bin, always with HTTP 200. Binary (``+proto``) and JSON (``+json``)
message encodings; the base64 ``-text`` variant is not served (415).
"""

from __future__ import annotations

import base64
from typing import Final
from urllib.parse import quote

from trellis.errors import InvalidInput
from trellis.server.http.protocol import JSON, PROTO, CallError, envelope

TYPES: Final = {
    "application/grpc-web": PROTO,
    "application/grpc-web+proto": PROTO,
    "application/grpc-web+json": JSON,
}
TRAILERS: Final = 0x80
# grpc-timeout: at most 8 digits and a unit (the gRPC spec's own bound).
_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
MAX_TIMEOUT_DIGITS: Final = 8


def is_grpc_web(media_type: str) -> bool:
    return media_type.startswith("application/grpc-web")


def parse_timeout(value: str | None) -> float | None:
    """Seconds from a grpc-timeout header (None: no deadline)."""
    if value is None:
        return None
    text = value.strip()
    digits, unit = text[:-1], text[-1:]
    if not digits.isdigit() or len(digits) > MAX_TIMEOUT_DIGITS or unit not in _UNITS:
        raise InvalidInput(
            f"grpc-timeout: {value[:20]!r} is not 1-{MAX_TIMEOUT_DIGITS} digits and a unit (H, M, S, m, u, n)"
        )
    return int(digits) * _UNITS[unit]


def trailers(error: CallError | None) -> bytes:
    """The trailer frame: status 0, or the error's code, message and details."""
    if error is None:
        return envelope(b"grpc-status: 0\r\n", TRAILERS)
    lines = [f"grpc-status: {error.code.value[0]}"]
    if error.message:
        # grpc-message is percent-encoded: anything outside printable ASCII, and '%' itself
        lines.append("grpc-message: " + quote(error.message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"))
    if error.status_details:
        lines.append(
            "grpc-status-details-bin: " + base64.b64encode(error.status_details).decode().rstrip("=")
        )
    return envelope(("\r\n".join(lines) + "\r\n").encode(), TRAILERS)
