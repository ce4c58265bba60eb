"""Idempotency keys for emitted tool calls (docs/engine.md, "Tools and sagas").

The key depends only on the session, the node, how far the session has walked
and the tool, so re-rendering the same state yields the same key and a
dispatcher can recognise a call it already ran.
"""

from __future__ import annotations

import hashlib


def idempotency_key(session_id: str, node_id: str, history_length: int, tool_name: str) -> str:
    """sha256 hex of ``"<session>:<node>:<len(history)>:<tool>"``."""
    raw = f"{session_id}:{node_id}:{history_length}:{tool_name}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()
