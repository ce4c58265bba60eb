"""MemoryStore: sessions in a dict, for tests and single-process embedding
(docs/adapters.md, "The rules, and the public helpers that apply them").

Each session is kept as its encoded JSON bytes, so a saved or loaded state can
never share a nested list or map with the store (the original copied only the
top-level context: docs/engine-differences.md, fix #19). Revisions come from one store-wide counter,
so a session deleted and created again never reuses a revision a stale writer
might still hold.

A quota keeps a memory store from growing until the process is killed: at most
``max_sessions`` sessions and ``max_bytes`` encoded bytes (IDs included) in
all; a save that would pass either raises StoreFull and changes nothing.
"""

from __future__ import annotations

from trellis.adapters.rules import check_expected_revision, check_session_id, paginate
from trellis.adapters.state_json import decode_own_state, encode_document, state_document
from trellis.domain import State
from trellis.errors import LockLost, SessionNotFound, StoreFull
from trellis.ports.locker import LockHandle
from trellis.ports.store import SessionPage


class MemoryStore:
    """A StateStore held in memory. ``max_state_bytes`` bounds one encoded state,
    ``max_sessions`` and ``max_bytes`` the whole store (None = no limit)."""

    def __init__(
        self,
        *,
        max_state_bytes: int | None = None,
        max_sessions: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._sessions: dict[str, tuple[int, bytes]] = {}
        self._last_revision = 0
        self._max_state_bytes = max_state_bytes
        self._max_sessions = max_sessions
        self._max_bytes = max_bytes
        self._bytes = 0

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
        held = self._bytes + len(data) - (len(current[1]) if current else -len(session_id))
        self._check_quota(session_id, current is None, held)
        self._last_revision += 1
        # A compact copy: orjson's output keeps its whole (4 KiB+) buffer allocated.
        self._sessions[session_id] = (self._last_revision, memoryview(data).tobytes())
        self._bytes = held
        return self._last_revision

    def _check_quota(self, session_id: str, new: bool, held: int) -> None:
        if new and self._max_sessions is not None and len(self._sessions) >= self._max_sessions:
            raise StoreFull(
                f"the memory store holds {len(self._sessions)} sessions, its limit "
                f"(memory_max_sessions); session {session_id!r} not saved"
            )
        if self._max_bytes is not None and held > self._max_bytes:
            raise StoreFull(
                f"saving session {session_id!r} would make the memory store hold {held} bytes; "
                f"its limit is {self._max_bytes} bytes (memory_max_bytes); not saved"
            )

    @property
    def size(self) -> tuple[int, int]:
        """Sessions held and their bytes (encoded states and IDs), as the quota counts them."""
        return len(self._sessions), self._bytes

    async def load(self, session_id: str) -> State:
        stored = self._stored(session_id)
        if stored is None:
            raise SessionNotFound(session_id)
        revision, data = stored
        # A fresh parse per load: the caller may change the state freely
        # (docs/engine-differences.md, fix #19).
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
        removed = self._sessions.pop(session_id, None)
        if removed is not None:
            self._bytes -= len(removed[1]) + len(session_id)

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        return paginate(self._sessions, page_size, page_token)
