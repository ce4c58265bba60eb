"""Size limits on what clients send, checked before anything is parsed.

Text inputs follow the spec's sanitiser limit (spec §14.6, TRELLIS_MAX_INPUT_SIZE);
contexts carried in a request are bounded separately (they are legitimately
larger than one answer, but a client must not make the server parse megabytes
of JSON per step). The gRPC max message size is the outer bound of both.
"""

from __future__ import annotations

from dataclasses import dataclass

from trellis.api.v1 import types_pb2 as pb
from trellis.errors import InvalidInput
from trellis.sanitize import DEFAULT_INPUT_LIMIT
from trellis.server.config import DEFAULT_MAX_CONTEXT_BYTES


@dataclass(frozen=True, slots=True)
class Limits:
    max_input_bytes: int = DEFAULT_INPUT_LIMIT
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES

    def check_context_text(self, text: str, field: str) -> None:
        size = len(text.encode())
        if size > self.max_context_bytes:
            raise InvalidInput(
                f"{field} exceeds maximum allowed size: size={size} limit={self.max_context_bytes}"
            )

    def check_state(self, msg: pb.State, field: str = "state") -> None:
        self.check_context_text(msg.context_json, f"{field}.context_json")
        self.check_context_text(msg.system_context_json, f"{field}.system_context_json")
