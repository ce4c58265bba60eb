"""The rules every StateStore applies the same way — public API for adapter authors.

A third-party store that uses these helpers behaves like the built-in ones, and
the contract suite (trellis.contracts.store) checks each rule:

* Session IDs (``check_session_id``): "empty or unsafe" IDs raise
  InvalidSessionId from ``save``, ``load`` and ``delete``. Empty is ``""``;
  unsafe is a leading ``.`` (so also ``.`` and ``..``), a ``/`` or ``\\``
  anywhere, any control character (Unicode category Cc, e.g. NUL or a line
  break) or lone surrogate (Cs), or more than 200 UTF-8 bytes. Everything else
  (spaces, ``:``, any script, emoji) is a valid ID. IDs end up as file names
  (file store) and key suffixes (etcd), so one rule applies everywhere: an ID
  accepted by one store is accepted by all of them, and no ID can climb out of
  a store's directory or prefix (docs/engine-differences.md, fix #14).
* Revisions (``check_expected_revision``): the ``expected_revision`` compare of
  StateStore.save. Revisions are > 0, increase with every save of a session and
  are never reused, not even after the session was deleted and created again.
* Listing (``paginate``): IDs in ascending Unicode code-point order (Python's
  ``str`` order, which is also the byte order of their UTF-8 form), pages
  continuing strictly after the token, the last ID of the previous page.
* JSON values (``encode_state``/``decode_state``): a state is stored as the
  JSON of docs/engine.md, "State". Integers from ``MIN_INT`` (-2**63) to ``MAX_INT``
  (2**64 - 1) stay integers (42 is never 42.0), floats stay floats (1e16 is not
  an integer, -0.0 keeps its sign), strings are exact. NaN, infinities and
  integers outside that range raise InvalidInput; a state whose encoding is
  over the store's limit raises StateTooLarge. In both cases nothing is stored.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from trellis.adapters.state_json import decode_document, encode_document, state_document
from trellis.domain import State
from trellis.errors import ConflictError, InvalidInput, InvalidSessionId
from trellis.ports.store import SessionPage

__all__ = [
    "MAX_INT",
    "MAX_SESSION_ID_BYTES",
    "MIN_INT",
    "check_expected_revision",
    "check_session_id",
    "decode_state",
    "encode_state",
    "paginate",
]

MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
"""The integers a stored state may hold (what a 64-bit JSON codec keeps exact)."""

MAX_SESSION_ID_BYTES = 200
"""UTF-8 bytes, so that ``<id>.json`` fits a file name on every common file system."""


def check_session_id(session_id: str) -> str:
    """Return ``session_id`` unchanged, or raise InvalidSessionId saying what is wrong.

    Refused: empty, ``.``/``..`` or any leading dot (hidden files are the store's
    own), ``/``, ``\\``, NUL or any other control character, more than 200 UTF-8
    bytes.
    """
    if not isinstance(session_id, str) or session_id == "":
        raise InvalidSessionId("session ID cannot be empty")
    if session_id.startswith("."):
        raise InvalidSessionId(f"session ID {session_id!r} must not start with '.'")
    for char in session_id:
        if char in "/\\":
            raise InvalidSessionId(f"session ID {session_id!r} must not contain {char!r}")
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidSessionId(
                f"session ID {session_id!r} must not contain control character U+{ord(char):04X}"
            )
    size = len(session_id.encode("utf-8"))
    if size > MAX_SESSION_ID_BYTES:
        raise InvalidSessionId(
            f"session ID is {size} bytes long; the limit is {MAX_SESSION_ID_BYTES} bytes (UTF-8)"
        )
    return session_id


def check_expected_revision(session_id: str, stored: int, expected: int | None) -> None:
    """Raise ConflictError when ``expected`` (see StateStore.save) does not match ``stored`` (0 = absent)."""
    if expected is None or expected == stored:
        return
    if expected == 0:
        message = f"session {session_id!r} already exists (revision {stored})"
    elif stored == 0:
        message = f"session {session_id!r} expected at revision {expected} but does not exist"
    else:
        message = (
            f"session {session_id!r} is at revision {stored}, not {expected}: someone else saved it first"
        )
    raise ConflictError(message, session_id=session_id, expected_revision=expected, stored_revision=stored)


def paginate(session_ids: Iterable[str], page_size: int, page_token: str) -> SessionPage:
    """One page of IDs in code-point order after ``page_token``; ``session_ids`` is any
    iterable of str. Raises InvalidInput for a negative ``page_size``."""
    if page_size < 0:
        raise InvalidInput(f"page_size must be 0 (all) or positive, got {page_size}")
    ordered = sorted(sid for sid in session_ids if sid > page_token)
    if page_size == 0 or len(ordered) <= page_size:
        return SessionPage(session_ids=ordered)
    page = ordered[:page_size]
    return SessionPage(session_ids=page, next_page_token=page[-1])


def encode_state(state: State, *, limit: int | None = None) -> bytes:
    """The JSON bytes of ``state`` by the value rules above (compact UTF-8). Raises
    InvalidInput for a value JSON cannot hold, StateTooLarge when longer than ``limit``."""
    return encode_document(state_document(state), limit=limit)


def decode_state(data: bytes, revision: int, where: str) -> State:
    """The state ``encode_state`` wrote, with ``revision`` set. Raises ValueError
    starting with ``where`` (e.g. the file or key) for damaged data."""
    try:
        return State.from_json(decode_document(data, where), revision=revision)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(where) else f"{where}: {message}") from None
