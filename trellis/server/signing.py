"""Integrity of client-carried states (docs/engine-differences.md, fix #11).

The stateless Engine service hands its state to the client and gets it back on
the next call. With a configured key it signs every state it returns —
HMAC-SHA256 over a canonical encoding — and refuses any state whose signature
does not match, so a client cannot move itself to another node, fake a pending
tool call or edit ``system_context``.

Canonical encoding: the state's JSON form (docs/engine.md, "State", revision excluded) with
sorted keys, encoded by orjson, prefixed by a version tag so that a future
encoding cannot collide with this one. It is computed from the parsed state,
so whitespace or key order in the client's JSON text does not matter.
"""

from __future__ import annotations

import hashlib
import hmac

import orjson

from trellis.domain import State
from trellis.errors import ConfigError, StateSignatureInvalid

_TAG = b"trellis.v1.State/1\n"
MIN_KEY_BYTES = 16


def canonical_state(state: State) -> bytes:
    return _TAG + orjson.dumps(state.to_json(), option=orjson.OPT_SORT_KEYS)


class StateSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"state signing key is too short: {len(key)} bytes, need at least {MIN_KEY_BYTES}"
            )
        self._key = key

    def sign(self, state: State) -> bytes:
        return hmac.new(self._key, canonical_state(state), hashlib.sha256).digest()

    def verify(self, state: State, signature: bytes) -> None:
        """Raise StateSignatureInvalid unless ``signature`` was made by this key for ``state``."""
        if not signature:
            raise StateSignatureInvalid(
                f"state of session {state.session_id!r} is not signed; send back the state as returned"
            )
        if not hmac.compare_digest(self.sign(state), signature):
            raise StateSignatureInvalid(
                f"state of session {state.session_id!r} was altered or not issued by this server"
            )
