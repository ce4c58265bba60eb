"""MemoryStore: sessions in a dict, for tests and single-process embedding (spec §13.2).

Each session is kept as its encoded JSON bytes, so a saved or loaded state can
never share a nested list or map with the store (the original copied only the
top-level context: spec §17 #19). Revisions come from one store-wide counter,
so a session deleted and created again never reuses a revision a stale writer
might still hold.
"""

from __future__ import annotations

from trellis.adapters.state_json import decode_own_state, encode_document, state_document
from trellis.adapters.store_rules import check_expected_revision, check_session_id, paginate
from trellis.domain import State
from trellis.errors import LockLost, SessionNotFound
from trellis.ports.locker import LockHandle
from trellis.ports.store import SessionPage


class MemoryStore:
    """A StateStore held in memory. ``max_state_bytes`` (None = no limit) bounds one encoded state."""

    def __init__(self, *, max_state_bytes: int | None = None) -> None:
        self._sessions: dict[str, tuple[int, bytes]] = {}
        self._last_revision = 0
        self._max_state_bytes = max_state_bytes

    async def save(
        self,
        session_id: str,
        state: State,
        *,
        expected_revision: int | None = None,
        fence: LockHandle | None = None,
    ) -> int:
        # No await in here: the checks and the write are one atomic step.
        current = self._stored(session_id)
        data = encode_document(state_document(state), limit=self._max_state_bytes)
        if fence is not None and not fence.held():
            raise LockLost(f"lock {fence.key!r} is no longer held; session {session_id!r} not saved")
        check_expected_revision(session_id, current[0] if current else 0, expected_revision)
        self._last_revision += 1
        # A compact copy: orjson's output keeps its whole (4 KiB+) buffer allocated.
        self._sessions[session_id] = (self._last_revision, memoryview(data).tobytes())
        return self._last_revision

    async def load(self, session_id: str) -> State:
        stored = self._stored(session_id)
        if stored is None:
            raise SessionNotFound(session_id)
        revision, data = stored
        # A fresh parse per load: the caller may change the state freely (spec §17 #19).
        return decode_own_state(data, revision)

    def _stored(self, session_id: str) -> tuple[int, bytes] | None:
        """The stored revision and bytes of a valid ``session_id`` (None: absent); raises
        InvalidSessionId. An ID already stored passed the check when it was first saved."""
        stored = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if stored is None:
            check_session_id(session_id)
        return stored

    async def delete(self, session_id: str) -> None:
        check_session_id(session_id)
        self._sessions.pop(session_id, None)

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        return paginate(self._sessions, page_size, page_token)
