"""SharedDirectoryWatch: one file watcher over a flow directory, fanned out to every subscriber.

Each file watcher costs an inotify instance and a thread, and a user has few
inotify instances (128 by default on Linux) shared by all of their processes. So
a directory loader runs at most one, started with its first subscriber (the
server's hot reload, each GraphLoader.Watch stream) and stopped after the last
one leaves.

The directory itself may go away (``rm -rf`` and re-create, a rename, a
checkout that replaces it). An inotify watch on a removed directory sees nothing
ever again, also once a new directory of that name exists, so the watcher checks
the directory's identity (device, inode) at every wake-up (at least once a
second) and, when it is gone or replaced, polls for it with bounded backoff.
Polling the path was chosen over watching the parent: the parent may be removed
too, and a poll of one ``stat`` a few times a second costs nothing. Once the
directory is back, a new watch is opened and the first thing it reports is a
full reload (no node IDs), since nothing can tell what changed meanwhile.

The path may be (or go through) a symbolic link that is swapped to another
directory: git-sync publishes each sync by atomically replacing a ``current``
link with one to a new worktree, then deletes the old worktree. The watch
covers the directory the path resolves to when it opens, and the identity
check stats the path as given (following links), so a swapped link is a
replaced directory like any other: the watch moves to the new target and
reports a full reload. This check runs at every wake-up, and the old
worktree's deletion wakes the watcher at once; a link swapped while the old
target stays is seen at the next quiet wake-up. One inotify instance still
suffices: no second watch on the link's parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, cast

from watchfiles import Change, awatch

from trellis.errors import BackendUnavailable
from trellis.ports.loader import GraphChange
from trellis.streams import QueueStream

log = logging.getLogger("trellis.adapters.directory_loader")

# How often (ms) a quiet watcher wakes up to check that its directory is still the same one.
IDENTITY_CHECK_MS: Final = 1000
# Polling for a removed directory: first delay and cap (seconds).
FIRST_POLL_DELAY: Final = 0.05
MAX_POLL_DELAY: Final = 2.0

Describe = Callable[[Path, set[str] | None], Awaitable[frozenset[str]]]
"""The node IDs a batch of changed paths under the watched directory (first argument:
the real path the watch covers) affects (empty: cannot tell, reload all).
Called with None as a watch opens: take the directory as it is now as the baseline."""

WatchFilter = Callable[[Path, Change, str], bool]
"""Whether a change of a path under the watched directory (first argument) matters."""

_Identity = tuple[int, int]


class SharedDirectoryWatch:
    """Subscribers get one GraphChange per (debounced) batch of relevant file changes."""

    def __init__(
        self,
        root: Path,
        *,
        describe: Describe,
        watch_filter: WatchFilter,
        debounce: float,
    ) -> None:
        self.root = root
        self._describe = describe
        self._filter = watch_filter
        self._debounce_ms = max(1, round(debounce * 1000))
        # Weak: a subscriber that drops its stream unsubscribes (QueueStream's on_close).
        self._subscribers: weakref.WeakSet[QueueStream[GraphChange]] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._stop: threading.Event | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        # The stop event of the run whose inotify instance is open now (None: none is), so
        # that watcher_count() counts instances, not tasks that may still be opening one.
        self._open_for: threading.Event | None = None
        self._revision = 0

    def subscribe(self) -> QueueStream[GraphChange]:
        loop = asyncio.get_running_loop()
        stream = QueueStream[GraphChange](on_close=self._unsubscribe, wait_closed=self._wait_stopped)
        self._subscribers.add(stream)
        if self._task is None:
            self._stop = threading.Event()  # thread-safe: also set from garbage collection
            self._task = loop.create_task(self._run(self._stop), name="trellis-directory-watch")
        return stream

    def watcher_count(self) -> int:
        """File watchers (inotify instances) open for this directory now: 0 or 1; 0 also
        while the watch is starting or waiting for a missing directory."""
        return 1 if self._task is not None and self._open_for is self._stop else 0

    async def aclose(self) -> None:
        """Stop the watcher and end every subscriber's stream."""
        for stream in list(self._subscribers):
            stream.end()
        self._subscribers.clear()
        self._halt()
        await self._wait_stopped()

    # --- subscribers ----------------------------------------------------------------

    def _unsubscribe(self, stream: QueueStream[GraphChange]) -> None:
        self._subscribers.discard(stream)
        if not self._subscribers:
            self._halt()

    def _halt(self) -> None:
        task, stop = self._task, self._stop
        self._task = self._stop = None
        if task is None or stop is None:
            return
        stop.set()  # the watcher thread returns at its next step
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        loop = task.get_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    async def _wait_stopped(self) -> None:
        for task in list(self._stopping):
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _publish(self, node_ids: frozenset[str]) -> None:
        self._revision += 1
        change = GraphChange(node_ids=node_ids, revision=self._revision)
        for stream in list(self._subscribers):
            stream.publish(change)

    # --- the watcher ----------------------------------------------------------------

    async def _run(self, stop: threading.Event) -> None:
        try:
            await self._follow(stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # E.g. the user's inotify limit is reached: subscribers get an error, not a
            # silent end, and re-subscribing later starts a new watcher.
            log.error("graph watch of %s stopped: %s", self.root, exc)
            if self._stop is stop:
                failure = BackendUnavailable(f"graph watch of '{self.root}' stopped: {exc}")
                for stream in list(self._subscribers):
                    stream.fail(failure)
                self._subscribers.clear()
                self._task = self._stop = None

    def _identity(self) -> _Identity | None:
        """The directory the path names now (through any links), or None when there is none."""
        try:
            info = os.stat(self.root)
        except OSError:
            return None
        return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None

    def _target(self) -> tuple[Path, _Identity] | None:
        """The real directory to watch and its identity, or None when there is none.

        The identity is taken from the resolved path, not the given one: should the link
        be swapped between the two steps, the next identity check sees the new target and
        the watch moves on, instead of watching the old one for good."""
        real = Path(os.path.realpath(self.root))
        try:
            info = os.stat(real)
        except OSError:
            return None
        return (real, (info.st_dev, info.st_ino)) if stat.S_ISDIR(info.st_mode) else None

    async def _wait_for_root(self) -> None:
        log.warning("graph watch: flow directory '%s' is gone; reloads resume when it is back", self.root)
        delay = FIRST_POLL_DELAY
        while True:
            await asyncio.sleep(delay)
            if self._identity() is not None:
                log.warning("graph watch: flow directory '%s' is back; reloading every node", self.root)
                return
            delay = min(delay * 2, MAX_POLL_DELAY)

    async def _follow(self, stop: threading.Event) -> None:
        lost = False  # the directory the previous watch covered is gone or replaced
        watched: Path | None = None  # the real directory the previous watch covered
        while not stop.is_set():
            target = self._target()
            if target is None:
                await self._wait_for_root()
                lost = True
                continue  # resolve the path again: it may have changed while polling
            real, identity = target
            root = str(real)
            if watched is not None and real != watched:
                log.info("graph watch: '%s' now leads to '%s'; reloading every node", self.root, real)
            watched = real

            def relevant(change: Change, path: str, real: Path = real, root: str = root) -> bool:
                return path == root or self._filter(real, change, path)  # the directory's own events too

            # A lost directory is reported as a full reload at the new watch's first wake-up,
            # so that no edit falls between that report and the moment the watch is open.
            full_reload_due, lost = lost, False
            await self._describe(real, None)
            try:
                watch = awatch(
                    real,
                    # A threading.Event: the watcher waits in a worker thread and only calls
                    # is_set(), which a thread-safe event serves (watchfiles types only async ones).
                    stop_event=cast(Any, stop),
                    debounce=self._debounce_ms,
                    step=min(50, self._debounce_ms),
                    rust_timeout=IDENTITY_CHECK_MS,
                    yield_on_timeout=True,
                    watch_filter=relevant,
                )
                # aclosing: leaving the loop early closes the inotify instance now, not at GC.
                async with contextlib.aclosing(watch):
                    # (awatch opens the instance in the first step below, before it yields
                    # to the event loop: nothing can see this flag set and no instance)
                    self._open_for = stop
                    async for changes in watch:
                        # Its own deletion event first: a file system may give a directory
                        # re-created at once the inode number of the removed one.
                        deleted = (Change.deleted, root) in changes
                        if deleted or self._identity() != identity:
                            lost = True
                            break  # this watch sees nothing more
                        if full_reload_due:
                            full_reload_due = False
                            self._publish(frozenset())
                            continue
                        paths = {path for _change, path in changes if path != root}
                        if paths:
                            self._publish(await self._describe(real, paths))
            except FileNotFoundError:
                if self._identity() == identity:
                    raise
                lost = True  # removed or replaced (a link swapped) while the watch was being opened
            finally:
                if self._open_for is stop:
                    self._open_for = None
