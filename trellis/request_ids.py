"""Request IDs: a step sent twice is applied once.

A caller may give Start, Navigate and Signal a ``request_id`` (a UUID, say). When the
step is applied, the ID goes into the session's state (``State.requests``) together
with a digest of what the request asked, so it is stored in the SAME write as the step
itself: on etcd the optimistic step stays one transaction, and whichever replica a
retry reaches reads the ID with the state. A request whose ID is found there is not
applied again; the caller gets the session as it is now (``StepResult.replayed``).
The same ID with a different request (another input, signal or kind of step) is a
client bug and is refused (RequestIdReused) rather than silently answered.

Bounded: a session remembers the IDs of its last RECENT_REQUESTS steps that had one
(oldest dropped first), each at most MAX_REQUEST_ID_LENGTH characters of
REQUEST_ID_ALPHABET. A retry must come before that many other identified steps of the
same session were applied — seconds, for any client that retries after a lost reply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import string
from typing import Final

from trellis.domain import AppliedRequest, JSONValue, State, ToolResult
from trellis.errors import InvalidInput, RequestIdReused

RECENT_REQUESTS: Final = 16
"""Request IDs a session remembers (the most recent identified steps)."""
MAX_REQUEST_ID_LENGTH: Final = 64
"""Characters of one request ID (a UUID has 36)."""
REQUEST_ID_ALPHABET: Final = string.ascii_letters + string.digits + "-_.:"
_VALID: Final = re.compile(r"[A-Za-z0-9\-_.:]*")


def check_request_id(request_id: str) -> str:
    """``request_id`` itself when valid (empty: none given); raises InvalidInput."""
    if not isinstance(request_id, str):
        raise InvalidInput(f"request_id: must be a string, got {type(request_id).__name__}")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidInput(
            f"request_id: {len(request_id)} characters; at most {MAX_REQUEST_ID_LENGTH} are allowed"
        )
    if not _VALID.fullmatch(request_id):
        bad = next(ch for ch in request_id if ch not in REQUEST_ID_ALPHABET)
        raise InvalidInput(
            f"request_id: character {bad!r} is not allowed (use letters, digits, '-', '_', '.', ':')"
        )
    return request_id


def digest(kind: str, what: JSONValue | ToolResult = None) -> str:
    """A short fingerprint of a request: its kind (start, navigate, signal) and argument."""
    if isinstance(what, ToolResult):
        what = {"tool_result": dataclasses.asdict(what)}
    text = json.dumps([kind, what], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def find(state: State, request_id: str, request_digest: str) -> bool:
    """Whether ``request_id`` was already applied to ``state``'s session; raises
    RequestIdReused when it was, for a different request."""
    for applied in state.requests:
        if applied.id == request_id:
            if applied.digest != request_digest:
                raise RequestIdReused(state.session_id, request_id)
            return True
    return False


def record(state: State, before: State | None, request_id: str, request_digest: str) -> None:
    """Note in ``state`` (the step's outcome) that the request was applied: the IDs
    ``before`` had (the state the step started from), this one last, the oldest dropped
    beyond RECENT_REQUESTS."""
    kept = before.requests if before is not None else ()
    state.requests = (*kept, AppliedRequest(request_id, request_digest))[-RECENT_REQUESTS:]
