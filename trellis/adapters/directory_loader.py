"""DirectoryLoader: a graph read from a directory tree of .md/.json/.yaml/.yml files
(docs/engine.md, "Graphs and node IDs").

Differences from the original, on purpose (docs/engine-differences.md, fix #17):
* every hidden directory is skipped (not only ``.git``), so session files kept under
  ``.trellis/`` inside a flow never show up as nodes;
* nodes are indexed by their ID, explicit or path-derived: a file whose ``id`` differs
  from its path is found by that ``id`` (and not by its path);
* an ID that would leave the root (``../x``, ``/etc/x``, backslashes, hidden segments,
  symlinks pointing outside) is simply not found: nothing outside the root is read;
* a file that cannot be read or parsed is listed under its ID (explicit when it can be
  read, else path-derived) and fails with a clear error when requested, instead of
  silently vanishing from the listing; only ID collisions fail the listing.

Parsed files are cached by content digest, so a node is parsed again only when its
bytes change; reading a small file to compare is far cheaper than parsing it.

The flow directory may be given through a symbolic link that is later pointed elsewhere
(git-sync swaps its ``current`` link to each new worktree): the path is resolved again
at every listing and lookup, never once for good, and the watch follows the swap too
(see SharedDirectoryWatch) and reports it as a full reload.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from watchfiles import Change

from trellis.adapters.directory_watch import SharedDirectoryWatch
from trellis.domain import Node
from trellis.errors import GraphError, NodeDefinitionError, NodeNotFound
from trellis.loading import (
    DEFAULT_MAX_FILE_BYTES,
    NODE_EXTENSIONS,
    NodeDraft,
    draft_from_bytes,
    importers_of,
    resolve_tools,
    strip_node_extension,
)
from trellis.loading.ids import node_extension
from trellis.ports.loader import GraphChange
from trellis.streams import QueueStream

log = logging.getLogger(__name__)

ENTRY_CANDIDATES = ("start", "main", "index")
ENTRY_EXTENSIONS = (".md", ".yaml", ".json")


def entry_node_id(root: str | os.PathLike[str]) -> str:
    """The entry node the CLI uses for a flow directory (docs/engine.md, "Graphs and node
    IDs"): ``start``, ``main``, ``index``, then the directory's own name, each as
    .md/.yaml/.json at the root; else ``start``."""
    directory = Path(root)
    for name in (*ENTRY_CANDIDATES, directory.resolve().name):
        if any((directory / f"{name}{extension}").is_file() for extension in ENTRY_EXTENSIONS):
            return name
    return "start"


def has_default_error_node(root: str | os.PathLike[str]) -> bool:
    """Whether the flow has a root-level ``error`` node, which the CLI uses as default error node."""
    directory = Path(root)
    return any((directory / f"error{extension}").is_file() for extension in ENTRY_EXTENSIONS)


@dataclass(frozen=True, slots=True)
class _Entry:
    """One node file as last read: its ID and either its draft or the error it raises."""

    rel: str
    node_id: str
    digest: bytes
    draft: NodeDraft | None = None
    error: NodeDefinitionError | None = None


_Snapshot = dict[str, tuple[str, bytes]]
"""A graph's files as a watch last saw them: root-relative path → (node ID, content digest)."""


def _priority(rel: str) -> tuple[str, int]:
    """Sort key: by path-derived ID, then the extension priority of NODE_EXTENSIONS."""
    extension = node_extension(rel)
    return rel[: -len(extension)], NODE_EXTENSIONS.index(extension)


class DirectoryLoader:
    """A GraphLoader and Watchable over a directory of node files."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        debounce: float = 0.05,
    ) -> None:
        self.root = Path(root)
        self.max_file_bytes = max_file_bytes
        self.debounce = debounce
        # Absolute now, so that a later change of working directory moves nothing; links
        # are NOT resolved here (a swapped link must be followed, see _resolved_root).
        self._given = Path(os.path.abspath(self.root))
        # Errors name files as "<flow directory name>/<path>", as the user knows them.
        self._label = self._given.name or str(self.root)
        self._cache: dict[str, _Entry] = {}
        # What the shared watch last saw (None: take the cache as it stands), so each
        # change can be told by comparing whole snapshots.
        self._known: _Snapshot | None = None
        self._watch = SharedDirectoryWatch(
            self._given, describe=self._describe, watch_filter=self._relevant, debounce=debounce
        )

    # --- GraphLoader ------------------------------------------------------------------

    async def get_node(self, node_id: str) -> Node:
        return await asyncio.to_thread(self._get_node, node_id)

    async def list_nodes(self) -> list[str]:
        return await asyncio.to_thread(self._list_nodes)

    # --- Watchable ----------------------------------------------------------------------

    def watch(self) -> QueueStream[GraphChange]:
        """Changes from now on: one GraphChange per (debounced) edit, naming the changed node
        IDs and the nodes importing tools from them; an empty set when that cannot be told
        (e.g. a directory renamed, or the flow directory removed and re-created). All the
        streams of one loader share one file watcher (see SharedDirectoryWatch), started
        at the next turn of the event loop. Close the stream (``aclose``) or drop it to
        stop watching."""
        return self._watch.subscribe()

    def watcher_count(self) -> int:
        """File watchers (inotify instances) this loader runs now: 0 or 1, however many streams."""
        return self._watch.watcher_count()

    async def aclose(self) -> None:
        """Stop watching and end every watch stream."""
        await self._watch.aclose()

    # --- reading ------------------------------------------------------------------------

    def _source(self, rel: str) -> str:
        return f"{self._label}/{rel}"

    def _resolved_root(self) -> Path:
        """The real directory the flow path names now. Resolved once per listing or lookup,
        which then reads only below it, so a link swapped meanwhile cannot mix two graphs."""
        return Path(os.path.realpath(self._given))

    @staticmethod
    def _safe_path(root: Path, rel: str) -> Path | None:
        """The file for a root-relative path, or None when it is not a regular file inside the root."""
        path = root / rel
        try:
            real = path.resolve()
            # is_file() raises for some errors (e.g. ENAMETOOLONG for an over-long ID):
            # any path the OS cannot stat is simply not a node.
            if not real.is_relative_to(root) or not real.is_file():
                return None
        except OSError:
            return None
        return real

    @classmethod
    def _walked_path(cls, root: Path, rel: str) -> Path | None:
        path = root / rel
        try:
            mode = path.lstat().st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return cls._safe_path(root, rel)
        return path if stat.S_ISREG(mode) else None  # never open a FIFO or a device

    def _entry(self, root: Path, rel: str, *, walked: bool = False) -> _Entry | None:
        """Read one file under the real ``root`` (through the cache); None when it does not exist.

        ``walked``: the path came from walking the root without following links, so only
        its last component can be a link and a cheap check replaces resolving the path."""
        path = self._walked_path(root, rel) if walked else self._safe_path(root, rel)
        path_id = strip_node_extension(rel)
        source = self._source(rel)
        if path is None:
            self._cache.pop(rel, None)
            return None
        try:
            with path.open("rb") as handle:
                raw = handle.read(self.max_file_bytes + 1)
        except FileNotFoundError:
            self._cache.pop(rel, None)
            return None
        except OSError as exc:
            error = NodeDefinitionError(path_id, source, "", f"cannot read file: {exc.strerror or exc}")
            return _Entry(rel, path_id, b"", error=error)
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        cached = self._cache.get(rel)
        if cached is not None and cached.digest == digest:
            return cached
        try:
            # (a file over the limit was read one byte past it, which draft_from_bytes refuses)
            draft = draft_from_bytes(raw, rel, source=source, max_bytes=self.max_file_bytes)
            entry = _Entry(rel, draft.node.id, digest, draft=draft)
        except NodeDefinitionError as exc:
            # Listed under the ID the file declares when it got that far, else its path ID.
            entry = _Entry(rel, exc.node_id, digest, error=exc)
        self._cache[rel] = entry
        return entry

    def _scan(self, root: Path) -> list[_Entry]:
        """Every node file under the real ``root`` (hidden files and directories skipped), by priority."""
        if not root.is_dir():
            raise GraphError(f"graph directory '{self.root}' does not exist or is not a directory")
        found: list[str] = []
        for directory, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
            base = Path(directory).relative_to(root).as_posix()
            for name in filenames:
                if name.startswith(".") or not node_extension(name):
                    continue
                found.append(name if base == "." else f"{base}/{name}")
        entries = []
        for rel in sorted(found, key=_priority):
            entry = self._entry(root, rel, walked=True)
            if entry is not None:
                entries.append(entry)
        for stale in set(self._cache) - set(found):
            self._cache.pop(stale, None)
        return entries

    def _list_nodes(self) -> list[str]:
        by_id: dict[str, list[str]] = {}
        for entry in self._scan(self._resolved_root()):
            by_id.setdefault(entry.node_id, []).append(entry.rel)
        problems = [
            f"collision detected: node ID '{node_id}' is defined by " + " and ".join(rels)
            for node_id, rels in sorted(by_id.items())
            if len(rels) > 1
        ]
        if problems:
            raise GraphError("; ".join(problems), problems)
        return sorted(by_id)

    def _candidates(self, node_id: str) -> list[str]:
        """Root-relative files that may hold ``node_id`` by path, in priority order.
        Raises NodeNotFound for an ID that is not a plain relative path inside the root."""
        parts = node_id.split("/")
        if (
            not node_id
            or "\\" in node_id
            or "\x00" in node_id
            or any(not part or part.startswith(".") for part in parts)
            or PurePosixPath(node_id).is_absolute()
        ):
            raise NodeNotFound(node_id, f"node {node_id!r} not found (not a valid node ID)")
        if node_extension(node_id):
            return [node_id]
        return [f"{node_id}{extension}" for extension in NODE_EXTENSIONS]

    def _find(self, root: Path, node_id: str) -> _Entry:
        """The file under the real ``root`` holding ``node_id``: by path first (extension
        priority), else by explicit ID."""
        wanted = strip_node_extension(node_id)
        declared_elsewhere: list[str] = []
        for rel in self._candidates(node_id):
            entry = self._entry(root, rel)
            if entry is None:
                continue
            if entry.node_id == wanted:
                return entry
            declared_elsewhere.append(f"{rel} declares id '{entry.node_id}'")
        if not root.is_dir():
            raise NodeNotFound(node_id, f"node {node_id!r} not found: no graph directory '{self.root}'")
        # An ID with an extension names one file: no search by explicit ID.
        if not node_extension(node_id):
            for entry in self._scan(root):
                if entry.node_id == wanted:
                    return entry
        hint = f" ({'; '.join(declared_elsewhere)})" if declared_elsewhere else ""
        raise NodeNotFound(node_id, f"node {node_id!r} not found in {self._label}{hint}")

    def _lookup_draft(self, root: Path, node_id: str) -> NodeDraft | None:
        try:
            entry = self._find(root, node_id)
        except NodeNotFound:
            return None
        if entry.error is not None:
            raise entry.error
        return entry.draft

    def _get_node(self, node_id: str) -> Node:
        root = self._resolved_root()  # the node and its tool libraries from one directory
        entry = self._find(root, node_id)
        if entry.error is not None:
            raise entry.error
        assert entry.draft is not None
        return resolve_tools(entry.draft, functools.partial(self._lookup_draft, root))

    # --- watching -----------------------------------------------------------------------

    def _relevant(self, root: Path, change: Change, path: str) -> bool:
        """Changes to node files and directories outside hidden directories (``root``: the
        real directory the watch covers)."""
        try:
            rel = Path(path).relative_to(root).as_posix()
        except ValueError:
            return False
        if any(part.startswith(".") for part in rel.split("/")):
            return False
        if node_extension(rel):
            return True
        # A directory renamed or removed moves every node file under it.
        return Path(path).is_dir() or any(cached.startswith(rel + "/") for cached in list(self._cache))

    def _changed_ids(
        self, root: Path, paths: set[str], known: _Snapshot | None
    ) -> tuple[frozenset[str], _Snapshot]:
        """IDs affected since the previous event (the empty set means "cannot tell, reload
        all"), and the new snapshot of the graph's files.

        ``known`` is the snapshot taken at the previous event (on a first event the loader's
        cache stands in for it). Comparing whole snapshots, not only the event's paths, also
        catches a change whose own event has not been processed yet.
        """
        if known is None:
            known = {rel: (entry.node_id, entry.digest) for rel, entry in list(self._cache.items())}
        before = known
        entries = self._scan(root)
        after = {entry.rel: (entry.node_id, entry.digest) for entry in entries}
        changed: set[str] = set()
        for rel in before.keys() | after.keys():
            if before.get(rel) != after.get(rel):
                changed.update(snapshot[rel][0] for snapshot in (before, after) if rel in snapshot)
        for rel in {Path(path).relative_to(root).as_posix() for path in paths}:
            if not node_extension(rel):
                return frozenset(), after  # a directory moved: every node under it may have changed
            if rel not in before and rel not in after:
                return frozenset(), after  # came and went unseen: its ID is unknown
            changed.update(snapshot[rel][0] for snapshot in (before, after) if rel in snapshot)
        drafts = {entry.node_id: entry.draft for entry in entries if entry.draft is not None}
        return frozenset(importers_of(drafts, changed)), after

    async def _describe(self, root: Path, paths: set[str] | None) -> frozenset[str]:
        """For the shared watch: the node IDs a batch of changed paths under the real ``root``
        affects; with None, as a watch opens (also on a new target after a link swap), take
        the files as they are now as the snapshot to compare with."""
        if paths is None:
            try:
                entries = await asyncio.to_thread(self._scan, root)
                self._known = {entry.rel: (entry.node_id, entry.digest) for entry in entries}
            except Exception:
                self._known = None  # the first event compares with the cache instead
            return frozenset()
        try:
            node_ids, self._known = await asyncio.to_thread(self._changed_ids, root, paths, self._known)
        except Exception:
            # A broken file is reported by get_node; the watch must survive anything here.
            log.warning("graph watch: cannot tell which nodes changed", exc_info=True)
            self._known = None
            return frozenset()
        return node_ids
