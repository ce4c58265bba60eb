"""Size limits on what clients send, checked before anything is parsed, and on what
the server sends back.

Text inputs follow the sanitiser's limit (docs/engine.md, "Input", TRELLIS_MAX_INPUT_SIZE);
contexts carried in a request are bounded separately (they are legitimately
larger than one answer, but a client must not make the server parse megabytes
of JSON per step). The gRPC max message size is the outer bound of both.

Replies: a step's reply carries the state once and the actions of its render.
The state limit (``max_state_bytes``, by default half of what a reply can hold
besides its envelope) bounds the first, and every store refuses a bigger state;
the rest of the reply is the render's budget. Both are checked before a durable
step is saved, so a step whose reply could not be sent is refused, not stored
(a stored session whose every Get overflows the message limit is unreadable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trellis.api import DEFAULT_MAX_MESSAGE_BYTES, convert
from trellis.api.v1 import types_pb2 as pb
from trellis.domain import StepResult
from trellis.errors import InvalidInput, StateTooLarge
from trellis.sanitize import DEFAULT_INPUT_LIMIT
from trellis.server.config import (
    DEFAULT_MAX_CONTEXT_BYTES,
    REPLY_ENVELOPE_BYTES,
    derived_state_limit,
)


@dataclass(frozen=True, slots=True)
class Limits:
    max_input_bytes: int = DEFAULT_INPUT_LIMIT
    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_state_bytes: int = 0
    """0 = derived from max_message_bytes (derived_state_limit)."""

    @property
    def state_limit(self) -> int:
        return self.max_state_bytes or derived_state_limit(self.max_message_bytes)

    @property
    def render_limit(self) -> int:
        """Bytes the actions of one reply may take, encoded."""
        return self.max_message_bytes - REPLY_ENVELOPE_BYTES - self.state_limit

    def check_context_text(self, text: str, field: str) -> None:
        size = len(text.encode())
        if size > self.max_context_bytes:
            raise InvalidInput(
                f"{field} exceeds maximum allowed size: size={size} limit={self.max_context_bytes}",
                field=field,
            )

    def check_state(self, msg: pb.State, field: str = "state") -> None:
        self.check_context_text(msg.context_json, f"{field}.context_json")
        self.check_context_text(msg.system_context_json, f"{field}.system_context_json")

    def check_stored_state(self, msg: pb.State, session_id: str) -> None:
        """A state sent to be stored (StateStore.Save) is bounded by the state limit, which
        every store applies: refused before its JSON is parsed."""
        size = msg.ByteSize()
        if size > self.state_limit:
            raise StateTooLarge(
                f"state of session {session_id!r} is {size} bytes encoded; the limit is "
                f"{self.state_limit} bytes (max_state_bytes)"
            )

    def check_step(self, step: StepResult) -> None:
        """Raise StateTooLarge unless ``step`` fits a reply: its state within the state limit,
        its actions within the rest. Run before a durable step is saved."""
        self.check_step_message(convert.step_to_proto(step))

    def check_step_message(self, step: pb.Step) -> None:
        state = step.state.ByteSize()
        session = step.state.session_id
        if state > self.state_limit:
            raise StateTooLarge(
                f"state of session {session!r} is {state} bytes encoded; the limit is "
                f"{self.state_limit} bytes (max_state_bytes)"
            )
        actions = sum(action.ByteSize() + 5 for action in step.actions)  # + tag and length of each
        if actions > self.render_limit:
            raise StateTooLarge(
                f"the actions shown for session {session!r} take {actions} bytes encoded; a reply "
                f"has room for {self.render_limit} bytes of them (max_message_bytes "
                f"{self.max_message_bytes} minus the state limit and the reply's envelope)"
            )

    def check_reply(self, response: Any, method: str) -> None:
        """The last guard before a reply leaves: never send one over the message limit (the
        client would get RESOURCE_EXHAUSTED without a reason)."""
        size = response.ByteSize()
        if size > self.max_message_bytes:
            raise StateTooLarge(
                f"the reply to {method} would be {size} bytes; the server sends at most "
                f"{self.max_message_bytes} bytes (max_message_bytes)"
            )
