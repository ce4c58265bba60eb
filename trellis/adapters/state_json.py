"""State ⇄ JSON bytes, the one encoding every store writes (docs/engine.md, "State").

orjson keeps ints as ints (42 stays 42, not 42.0: docs/adapters.md, "The rules, and
the public helpers that apply them"), floats as
floats and strings exact. NaN and infinities are not JSON and are refused
rather than silently stored as null; so are integers beyond 64 bits, which
orjson cannot encode.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from trellis.domain import AppliedRequest, JSONValue, State, Status
from trellis.errors import InvalidInput, StateTooLarge


def reject_non_finite(value: Any, path: str) -> None:
    """orjson writes NaN/Infinity as null; find them first so nothing is lost silently."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"state value at {path} is {value!r}, which JSON cannot hold")
    elif isinstance(value, dict):
        for key, item in value.items():
            reject_non_finite(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            reject_non_finite(item, f"{path}[{index}]")


def state_document(state: State, **extra: JSONValue) -> dict[str, JSONValue]:
    """The JSON form of ``state``; its fencing token (``fence``) and the request IDs
    recently applied to it (``requests``: stored in the same write as the step, see
    trellis.request_ids), when it has any; and ``extra`` top-level fields (``revision``)."""
    document = state.to_json()
    if state.fence_token:
        document["fence"] = state.fence_token
    if state.requests:
        document["requests"] = [request.to_json() for request in state.requests]
    document.update(extra)
    return document


def encode_document(
    document: dict[str, JSONValue], *, pretty: bool = False, limit: int | None = None
) -> bytes:
    """Encode a state document; raises InvalidInput for non-JSON values, StateTooLarge over ``limit``."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    session_id = document.get("session_id", "")
    try:
        data = orjson.dumps(document, option=option)
    except TypeError as exc:
        raise InvalidInput(f"state of session {session_id!r} is not JSON-compatible: {exc}") from None
    if b"null" in data:
        # Only then can a NaN/Infinity have been turned into null: check the slow way.
        reject_non_finite(document.get("context"), "context")
        reject_non_finite(document.get("system_context"), "system_context")
    if limit is not None and len(data) > limit:
        raise StateTooLarge(
            f"state of session {session_id!r} is {len(data)} bytes encoded; the limit is {limit} bytes"
        )
    return data


def decode_document(data: bytes, where: str) -> dict[str, JSONValue]:
    """Parse a stored state document; ``where`` names it in the error."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{where}: a state must be a JSON object")
    return document


_STATUS_BY_VALUE = {status.value: status for status in Status}


def decode_own_state(data: bytes, revision: int) -> State:
    """The state in ``data`` that ``encode_document(state_document(state))`` wrote in this very
    process (e.g. the memory store's own bytes). Trusted, so it skips the field checks
    State.from_json applies to documents from outside; every call parses afresh, so the
    state it returns shares nothing with ``data``'s other readers."""
    document = orjson.loads(data)
    return State(
        session_id=document["session_id"],
        current_node_id=document["current_node_id"],
        status=_STATUS_BY_VALUE[document["status"]],
        pending_tool_call=document.get("pending_tool_call", ""),
        context=document["context"],
        system_context=document["system_context"],
        locale=document.get("locale", ""),
        history=document.get("history", []),
        terminated=document.get("terminated", False),
        revision=revision,
        fence_token=document.get("fence", 0),
        requests=tuple(AppliedRequest(*pair) for pair in document.get("requests", ())),
    )
