"""Encryption at rest for any StateStore: AES-256-GCM envelopes with key rotation.

A session's ``context`` and ``system_context`` (the data the flow collected) are
sealed together into one envelope before the inner store sees them; node ID,
status, history and the other routing fields stay readable, since operators and
the engine's guardrails read them without a key. The envelope names the key
that sealed it, so a key ring of one *active* key (used for every write) and
any number of *fallback* keys (still accepted for reading) rotates keys without
downtime: add the new key first, restart, and every state is re-sealed with it
at its next step. The session ID is the authenticated data: an envelope copied
to another session does not open there.

Needs the ``cryptography`` package (``pip install 'trellis-flow[crypto]'``).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from trellis.adapters.state_json import encode_document
from trellis.adapters.store_middleware import MiddlewareStepStore, MiddlewareStore
from trellis.domain import JSONValue, State
from trellis.errors import ConfigError
from trellis.ports.store import StateStore, StepStore

ENVELOPE_KEY = "$trellis_sealed"
"""The single context key of a sealed state (``$`` cannot start a context name a flow uses)."""

_VERSION = 1
_NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The active key (seals every write) and the fallbacks (only open old envelopes)."""

    active_id: str
    keys: dict[str, AESGCM]

    @classmethod
    def from_text(cls, text: str, where: str) -> KeyRing:
        """One ``KEY_ID:BASE64`` a line (a 32-byte key; ``#`` comments): the first is active."""
        keys: dict[str, AESGCM] = {}
        active = ""
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            key_id, sep, encoded = line.partition(":")
            key_id = key_id.strip()
            if not sep or not key_id:
                raise ConfigError(f"{where}:{number}: expected KEY_ID:BASE64_KEY")
            try:
                secret = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"{where}:{number}: key {key_id!r} is not valid base64") from None
            if len(secret) != 32:
                raise ConfigError(
                    f"{where}:{number}: key {key_id!r} is {len(secret)} bytes; AES-256 needs 32"
                )
            if key_id in keys:
                raise ConfigError(f"{where}:{number}: key ID {key_id!r} appears twice")
            keys[key_id] = AESGCM(secret)
            active = active or key_id
        if not keys:
            raise ConfigError(f"{where}: no key (one KEY_ID:BASE64_KEY a line; the first is active)")
        return cls(active, keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the store key file {path}: {exc.strerror}") from None
        return cls.from_text(text, str(path))


def new_key_line(key_id: str) -> str:
    """A fresh ``KEY_ID:BASE64`` line for a key file."""
    return f"{key_id}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


class EncryptingStore(MiddlewareStore):
    """A StateStore that seals what it saves into ``inner`` and opens what it loads."""

    def __init__(self, inner: StateStore, keys: KeyRing) -> None:
        super().__init__(inner)
        self._keys = keys

    def stored(self, session_id: str, state: State) -> State:
        """The state sealed: its contexts in one AES-GCM envelope under the active key."""
        sealed = state.clone()
        # The value rules of every store (InvalidInput for NaN, infinities, > 64-bit integers).
        plain = encode_document({"context": state.context, "system_context": state.system_context})
        nonce = os.urandom(_NONCE_BYTES)
        cipher = self._keys.keys[self._keys.active_id].encrypt(nonce, plain, session_id.encode())
        envelope: dict[str, JSONValue] = {
            "v": _VERSION,
            "kid": self._keys.active_id,
            "nonce": base64.b64encode(nonce).decode(),
            "data": base64.b64encode(cipher).decode(),
        }
        sealed.context = {ENVELOPE_KEY: envelope}
        sealed.system_context = {}
        return sealed

    def loaded(self, session_id: str, state: State) -> State:
        """The state opened with the key its envelope names (a state never sealed as it is)."""
        envelope = state.context.get(ENVELOPE_KEY)
        if len(state.context) != 1 or not isinstance(envelope, dict):
            # Written before encryption was turned on: readable as it is, sealed at its next save.
            return state
        key_id = envelope.get("kid")
        key = self._keys.keys.get(key_id) if isinstance(key_id, str) else None
        if key is None:
            raise ConfigError(
                f"session {session_id!r} was sealed with key {key_id!r}, which is not in the key file "
                "(keep old keys as fallbacks until every session was re-sealed)"
            )
        try:
            nonce = base64.b64decode(str(envelope["nonce"]))
            cipher = base64.b64decode(str(envelope["data"]))
            plain: Any = orjson.loads(key.decrypt(nonce, cipher, session_id.encode()))
        except (InvalidTag, KeyError, ValueError, binascii.Error, orjson.JSONDecodeError):
            raise ConfigError(
                f"session {session_id!r}: its sealed state does not open with key {key_id!r} "
                "(altered, or copied from another session)"
            ) from None
        opened = state.clone()
        opened.context = plain["context"]
        opened.system_context = plain["system_context"]
        return opened


class EncryptingStepStore(MiddlewareStepStore, EncryptingStore):
    """The same over a store that is its own lock service, keeping its one-round-trip step."""


def encrypting(inner: StateStore, keys: KeyRing) -> EncryptingStore:
    """``inner`` with encryption at rest, keeping its StepStore capability if it has it."""
    if isinstance(inner, StepStore):
        return EncryptingStepStore(inner, keys)
    return EncryptingStore(inner, keys)
