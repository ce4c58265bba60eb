"""Rules every StateStore applies the same way: valid session IDs, the
``expected_revision`` compare and pagination of ``list``.

IDs end up as file names (file store) and key suffixes (etcd), so one rule
applies everywhere: an ID accepted by one store is accepted by all of them, and
no ID can climb out of a store's directory or prefix (spec §17 #14).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from trellis.errors import ConflictError, InvalidInput, InvalidSessionId
from trellis.ports.store import SessionPage

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
    """One page of sorted IDs after ``page_token``; ``session_ids`` is any iterable of str."""
    if page_size < 0:
        raise InvalidInput(f"page_size must be 0 (all) or positive, got {page_size}")
    ordered = sorted(sid for sid in session_ids if sid > page_token)
    if page_size == 0 or len(ordered) <= page_size:
        return SessionPage(session_ids=ordered)
    page = ordered[:page_size]
    return SessionPage(session_ids=page, next_page_token=page[-1])
