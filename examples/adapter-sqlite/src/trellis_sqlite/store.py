"""SqliteStore: sessions in one SQLite file, shared by the processes of one host.

Each save is one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock), so the
revision compare, the fence check and the write are atomic for every process
using the file. Revisions come from one counter row, so they are never reused,
not even after a delete. ``list`` relies on SQLite's default BINARY collation,
which compares UTF-8 bytes: the code-point order the StateStore port requires.

Fencing for real: besides ``fence.held()`` (this process's belief), a save
records the highest fencing token seen per lock key in the same transaction and
refuses a save with a lower one, so a holder that was paused past its TTL cannot
overwrite what the next holder wrote.

An example kept short: the SQLite calls block the event loop (each is quick on
a local disk). An adapter for heavy use would run each transaction in a thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trellis.adapters.rules import check_expected_revision, check_session_id, decode_state, encode_state
from trellis.domain import State
from trellis.errors import BackendUnavailable, InvalidInput, LockLost, SessionNotFound, TrellisError
from trellis.ports.locker import LockHandle
from trellis.ports.store import SessionPage

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, revision INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS revision (last INTEGER NOT NULL);
INSERT INTO revision SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM revision);
CREATE TABLE IF NOT EXISTS fences (key TEXT PRIMARY KEY, token INTEGER NOT NULL);
COMMIT;
"""


class SqliteStore:
    """A StateStore in the SQLite database ``path``; ``max_state_bytes`` bounds one encoded state."""

    def __init__(self, path: str | Path, *, max_state_bytes: int | None = None) -> None:
        self.path = Path(path)
        self._max_state_bytes = max_state_bytes
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot open SQLite database {path}: {exc}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"SQLite: {exc}") from None
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    async def save(
        self,
        session_id: str,
        state: State,
        *,
        expected_revision: int | None = None,
        fence: LockHandle | None = None,
    ) -> int:
        check_session_id(session_id)
        data = encode_state(state, limit=self._max_state_bytes)  # InvalidInput, StateTooLarge
        # No await from here to the commit: one transaction, atomic for tasks and processes.
        with self._transaction() as db:
            if fence is not None:
                self._check_fence(db, fence, session_id)
            row = db.execute("SELECT revision FROM sessions WHERE id = ?", (session_id,)).fetchone()
            check_expected_revision(session_id, row[0] if row else 0, expected_revision)
            (revision,) = db.execute("UPDATE revision SET last = last + 1 RETURNING last").fetchone()
            db.execute(
                "INSERT INTO sessions (id, revision, data) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, data = excluded.data",
                (session_id, revision, data),
            )
        return int(revision)

    def _check_fence(self, db: sqlite3.Connection, fence: LockHandle, session_id: str) -> None:
        if not fence.held():
            raise LockLost(f"lock {fence.key!r} is no longer held; session {session_id!r} not saved")
        row = db.execute("SELECT token FROM fences WHERE key = ?", (fence.key,)).fetchone()
        if row is not None and row[0] > fence.token:
            raise LockLost(
                f"lock {fence.key!r}: token {fence.token} was superseded by {row[0]}; "
                f"session {session_id!r} not saved"
            )
        db.execute(
            "INSERT INTO fences (key, token) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET token = excluded.token",
            (fence.key, fence.token),
        )

    async def load(self, session_id: str) -> State:
        check_session_id(session_id)
        row = self._db.execute("SELECT revision, data FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise SessionNotFound(session_id)
        try:
            return decode_state(row[1], row[0], f"session {session_id!r}")
        except ValueError as exc:
            raise TrellisError(f"session {session_id!r} is damaged: {exc}") from None

    async def delete(self, session_id: str) -> None:
        check_session_id(session_id)
        self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        if page_size < 0:
            raise InvalidInput(f"page_size must be 0 (all) or positive, got {page_size}")
        # One row more than the page tells whether another page follows.
        limit = page_size + 1 if page_size else -1
        rows = self._db.execute(
            "SELECT id FROM sessions WHERE id > ? ORDER BY id LIMIT ?", (page_token, limit)
        ).fetchall()
        ids = [row[0] for row in rows]
        if page_size and len(ids) > page_size:
            return SessionPage(ids[:page_size], next_page_token=ids[page_size - 1])
        return SessionPage(ids)

    async def probe(self) -> None:
        try:
            self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"SQLite: {exc}") from None

    async def close(self) -> None:
        self._db.close()
