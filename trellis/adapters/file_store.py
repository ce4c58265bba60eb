"""FileStore: one JSON file per session in a directory (docs/engine-differences.md, fix #14).

File format: ``<base_dir>/<session_id>.json`` holds the pretty-printed
(2-space) JSON state (docs/engine.md, "State") with one extra top-level field,
``"revision"`` (an int, 1 for the first save, +1 per save)::

    {
      "session_id": "s1",
      "current_node_id": "start",
      "status": "active",
      "context": {},
      "system_context": {},
      "history": ["start"],
      "revision": 3
    }

Writes are atomic: the new content goes to a hidden temporary file
(``.tmp-<random>``) in the same directory, is fsynced, then renamed over the
destination, and the directory is fsynced; a reader sees the old or the new
file, never half of one. A crash between the two leaves the temporary behind:
a new FileStore removes those older than a minute (younger ones may belong to
another process writing right now). Session IDs are checked (trellis.adapters.rules) so a file can
never land outside ``base_dir``; hidden files (temporaries, leftovers) are never
listed.

A deleted session leaves a hidden tombstone, ``.gone-<session_id>``, holding
its last revision, so a session created again continues after it: revisions
are never reused, and a writer still holding one from before the delete gets
ConflictError. The tombstone goes when the session is saved again.

Conditional saves (``expected_revision``, ``fence``) are exact within one
process (a per-session asyncio lock around read-compare-write). Several
processes sharing one directory must coordinate through a DistributedLocker.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from trellis.adapters.rules import check_expected_revision, check_session_id, paginate
from trellis.adapters.state_json import decode_document, encode_document, state_document
from trellis.domain import State
from trellis.errors import BackendUnavailable, InvalidSessionId, LockLost, SessionNotFound, TrellisError
from trellis.keyed_locks import KeyedLocks
from trellis.ports.locker import LockHandle
from trellis.ports.store import SessionPage

LOG = logging.getLogger("trellis.store")
DEFAULT_BASE_DIR = ".trellis/sessions"
_SUFFIX = ".json"
_TEMP_PREFIX = ".tmp-"
_GONE_PREFIX = ".gone-"
LEFTOVER_AGE = 60.0
"""Seconds after which a temporary file is a crash's leftover (a write takes milliseconds)."""
_T = TypeVar("_T")


class FileStore:
    """A StateStore in ``base_dir`` (created on first save; relative to the working directory)."""

    def __init__(
        self, base_dir: str | os.PathLike[str] = DEFAULT_BASE_DIR, *, max_state_bytes: int | None = None
    ) -> None:
        self._base = Path(base_dir)
        self._max_state_bytes = max_state_bytes
        self._locks = KeyedLocks()
        self.remove_leftovers()

    @property
    def base_dir(self) -> Path:
        return self._base

    def remove_leftovers(self, older_than: float = LEFTOVER_AGE) -> int:
        """Delete temporary files a crashed save left (those modified more than ``older_than``
        seconds ago); returns how many. Never fails: a directory that cannot be read now
        will fail the store's first call with a clear error."""
        removed = 0
        try:
            entries = list(os.scandir(self._base))
        except OSError:
            return 0
        cutoff = time.time() - older_than
        for entry in entries:
            if not entry.name.startswith(_TEMP_PREFIX):
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
                if entry.is_file(follow_symlinks=False) and stat.st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue  # gone already, or not ours to remove
        if removed:
            LOG.info("removed %d leftover temporary file(s) from %s", removed, self._base)
        return removed

    def _path(self, session_id: str) -> Path:
        check_session_id(session_id)
        path = self._base / f"{session_id}{_SUFFIX}"
        # Belt and braces: check_session_id already makes this impossible.
        if path.parent != self._base:
            raise TrellisError(f"session {session_id!r} would be stored outside {self._base}")
        return path

    async def save(
        self,
        session_id: str,
        state: State,
        *,
        expected_revision: int | None = None,
        fence: LockHandle | None = None,
    ) -> int:
        path = self._path(session_id)
        # Encoded here, on the caller's side of the await: the write is a snapshot of the state
        # as it was passed, and a state that cannot be encoded never touches the file.
        snapshot = encode_document(state_document(state), limit=self._max_state_bytes)
        async with self._locks.hold(session_id):
            if fence is not None and not fence.held():
                raise LockLost(f"lock {fence.key!r} is no longer held; session {session_id!r} not saved")
            return await _to_thread_to_completion(
                self._write, path, session_id, snapshot, expected_revision, fence
            )

    def _write(
        self,
        path: Path,
        session_id: str,
        snapshot: bytes,
        expected_revision: int | None,
        fence: LockHandle | None,
    ) -> int:
        stored = self._read_revision(path)
        check_expected_revision(session_id, stored, expected_revision)
        tombstone = self._tombstone(session_id)
        revision = (stored or self._gone_revision(tombstone)) + 1
        document = decode_document(snapshot, f"session {session_id!r}")
        document["revision"] = revision
        data = encode_document(document, pretty=True) + b"\n"
        try:
            self._base.mkdir(parents=True, exist_ok=True)
            temp = self._base / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
            try:
                with open(temp, "xb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                # Last look at the fence, as late as possible before the write becomes visible.
                if fence is not None and not fence.held():
                    raise LockLost(f"lock {fence.key!r} was lost; session {session_id!r} not saved")
                os.replace(temp, path)
            finally:
                temp.unlink(missing_ok=True)
            if stored == 0:
                tombstone.unlink(missing_ok=True)
            self._sync_dir()
        except OSError as exc:
            raise BackendUnavailable(f"cannot write session file {path}: {exc.strerror or exc}") from None
        return revision

    def _tombstone(self, session_id: str) -> Path:
        return self._base / f"{_GONE_PREFIX}{session_id}"

    def _gone_revision(self, tombstone: Path) -> int:
        """The last revision of a deleted session (0: none, or an unreadable tombstone)."""
        try:
            return int(tombstone.read_text(encoding="ascii"))
        except (OSError, ValueError):
            return 0

    def _sync_dir(self) -> None:
        fd = os.open(self._base, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_document(self, path: Path, session_id: str) -> dict[str, object] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendUnavailable(f"cannot read session file {path}: {exc.strerror or exc}") from None
        try:
            return decode_document(data, str(path))
        except ValueError as exc:
            raise TrellisError(f"session {session_id!r} is damaged: {exc}") from None

    def _read_revision(self, path: Path) -> int:
        document = self._read_document(path, path.name[: -len(_SUFFIX)])
        if document is None:
            return 0
        return _revision_of(document, path)

    async def load(self, session_id: str) -> State:
        path = self._path(session_id)
        document = await asyncio.to_thread(self._read_document, path, session_id)
        if document is None:
            raise SessionNotFound(session_id)
        try:
            return State.from_json(document, revision=_revision_of(document, path))
        except ValueError as exc:
            raise TrellisError(f"session {session_id!r} is damaged: {path}: {exc}") from None

    async def delete(self, session_id: str) -> None:
        path = self._path(session_id)
        async with self._locks.hold(session_id):
            await _to_thread_to_completion(self._remove, path, session_id)

    def _remove(self, path: Path, session_id: str) -> None:
        try:
            revision = self._read_revision(path)
        except TrellisError:
            revision = -1  # a damaged file: delete it all the same (no revision to remember)
        # Revision 0 is an absent file (unlink below finds nothing) or one written without
        # a revision (still a session: delete it, with no revision to remember).
        try:
            if revision > 0:
                temp = self._base / f"{_TEMP_PREFIX}{secrets.token_hex(8)}"
                temp.write_text(str(revision), encoding="ascii")
                os.replace(temp, self._tombstone(session_id))
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendUnavailable(f"cannot delete session file {path}: {exc.strerror or exc}") from None
        self._sync_dir()

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        return paginate(await asyncio.to_thread(self._scan), page_size, page_token)

    def _scan(self) -> builtins.list[str]:
        found: builtins.list[str] = []
        try:
            entries = list(os.scandir(self._base))
        except FileNotFoundError:
            return found
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot list session directory {self._base}: {exc.strerror or exc}"
            ) from None
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.endswith(_SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            session_id = name[: -len(_SUFFIX)]
            try:
                check_session_id(session_id)
            except InvalidSessionId:
                continue  # put there by hand: no store call could ever reach it
            found.append(session_id)
        return found


async def _to_thread_to_completion(function: Callable[..., _T], *args: object) -> _T:
    """Run ``function`` in a thread; if the caller is cancelled meanwhile, still wait for the
    thread before returning, so the per-session lock is never released while a write is
    under way (another save would then compare against a revision about to change)."""
    work = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise


def _revision_of(document: dict[str, object], path: Path) -> int:
    revision = document.get("revision", 0)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise TrellisError(f"{path}: field 'revision' must be a non-negative integer, got {revision!r}")
    return revision
