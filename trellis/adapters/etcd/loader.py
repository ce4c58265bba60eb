"""EtcdGraphLoader: a flow published in etcd, kept current by a watch (GraphLoader + Watchable).

Layout: ``<prefix>/graphs/<name>/nodes/<node-id>`` per node, whose value is the
node file's path in the flow directory, a newline, then the file's bytes (so
the same parser applies and ``pull`` can write the file back), plus
``<prefix>/graphs/<name>/version``. ``publish`` (publish.py) writes a whole flow
in one transaction.

The loader reads the whole graph once, then follows it with a watch starting
at the revision it read: lookups are served from memory and parsed once per
version of a file. Each etcd transaction (one publish) becomes one GraphChange,
emitted after the loader's own view has been updated. Reconnects resume at the
last revision seen; a watch that fell behind compaction reloads the whole graph
and reports GraphChange with empty ``node_ids``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient, prefix_end
from trellis.adapters.etcd.watch import Subscription
from trellis.domain import Node
from trellis.errors import GraphError, NodeDefinitionError, NodeNotFound
from trellis.loading import NodeDraft, draft_from_bytes, importers_of, resolve_tools, strip_node_extension
from trellis.ports.loader import GraphChange
from trellis.streams import QueueStream

log = logging.getLogger(__name__)


def graph_prefix(client: EtcdClient, name: str) -> bytes:
    return client.config.key("graphs", name) + b"/"


def encode_node(path: str, raw: bytes) -> bytes:
    return path.encode() + b"\n" + raw


def decode_node(value: bytes) -> tuple[str, bytes]:
    """(file path, file bytes) of a stored node."""
    path, _, raw = value.partition(b"\n")
    return path.decode(errors="replace"), raw


@dataclass(frozen=True, slots=True)
class _File:
    path: str
    raw: bytes
    draft: NodeDraft | None = None
    error: NodeDefinitionError | None = None


class EtcdGraphLoader:
    """GraphLoader + Watchable over graph ``name`` in etcd. Close with ``aclose``."""

    def __init__(self, client: EtcdClient, name: str) -> None:
        if not name or "/" in name:
            raise ValueError(f"graph name {name!r} must be non-empty and contain no '/'")
        self.client = client
        self.name = name
        self._prefix = graph_prefix(client, name)
        self._nodes_prefix = self._prefix + b"nodes/"
        self._files: dict[str, _File] = {}
        self._revision = 0
        self._ready: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._streams: weakref.WeakSet[QueueStream[GraphChange]] = weakref.WeakSet()
        self._reloading: asyncio.Task[None] | None = None
        self._held_back: list[tuple[Sequence[Any], int]] = []

    # --- GraphLoader -----------------------------------------------------------------

    async def get_node(self, node_id: str) -> Node:
        await self._ensure_loaded()
        draft = self._draft(strip_node_extension(node_id), node_id)
        return resolve_tools(draft, self._lookup)

    async def list_nodes(self) -> list[str]:
        await self._ensure_loaded()
        return sorted(self._files)

    async def probe(self) -> None:
        """Health check: etcd answers AND the graph was published (its version key exists).
        A replica pointed at a graph nobody pushed has no node to serve: NOT_SERVING."""
        await self.client.probe()
        version = self._prefix + b"version"
        response = await self.client.call("Range", rpc.RangeRequest(key=version, count_only=True))
        if not response.count:
            raise GraphError(
                f"graph {self.name!r} was never published under {self.client.config.prefix or '/'} "
                "(publish it with 'trellis graph push')"
            )

    # --- Watchable -------------------------------------------------------------------

    def watch(self) -> QueueStream[GraphChange]:
        """Changes from now on, one per etcd transaction. Close the stream (or drop it)
        to stop receiving them; ``aclose`` ends every stream."""
        stream = QueueStream[GraphChange](on_close=self._streams.discard)
        self._streams.add(stream)
        task = asyncio.ensure_future(self._ensure_loaded())
        task.add_done_callback(_log_failure)
        return stream

    async def aclose(self) -> None:
        for stream in list(self._streams):
            stream.end()
        self._streams.clear()
        if self._subscription is not None:
            await self.client.watches.unsubscribe(self._subscription)
            self._subscription = None
        for task in (self._ready, self._reloading):
            if task is not None and not task.done():
                task.cancel()

    # --- reading ---------------------------------------------------------------------

    async def _ensure_loaded(self) -> None:
        failed = (
            self._ready is not None
            and self._ready.done()
            and (self._ready.cancelled() or self._ready.exception() is not None)
        )
        if self._ready is None or failed:
            self._ready = asyncio.ensure_future(self._first_load())
        await asyncio.shield(self._ready)

    async def _first_load(self) -> None:
        revision = await self._load_all()
        self._subscription = await self.client.watches.subscribe(
            self._prefix, prefix_end(self._prefix), revision + 1, self._on_events, self._on_resync
        )

    async def _load_all(self) -> int:
        """Replace the loader's view with the graph as stored now; returns its revision."""
        request = rpc.RangeRequest(key=self._nodes_prefix, range_end=prefix_end(self._nodes_prefix))
        response = await self.client.call("Range", request)
        files = {}
        for kv in response.kvs:
            node_id = kv.key[len(self._nodes_prefix) :].decode()
            files[node_id] = self._parse(node_id, kv.value, self._files.get(node_id))
        self._files = files
        self._revision = response.header.revision
        return int(self._revision)

    def _parse(self, node_id: str, value: bytes, previous: _File | None) -> _File:
        path, raw = decode_node(value)
        if previous is not None and previous.path == path and previous.raw == raw:
            return previous  # unchanged bytes: keep the parsed draft
        source = f"etcd:{self.name}/{path}"
        try:
            return _File(path, raw, draft=draft_from_bytes(raw, path, source=source))
        except NodeDefinitionError as exc:
            return _File(path, raw, error=exc)
        except ValueError as exc:  # not a node file name: written by hand, not by publish
            return _File(path, raw, error=NodeDefinitionError(node_id, source, "", str(exc)))

    def _draft(self, node_id: str, asked: str) -> NodeDraft:
        found = self._files.get(node_id)
        if found is None:
            raise NodeNotFound(asked, f"node {asked!r} not found in graph {self.name!r} in etcd")
        if found.error is not None:
            raise found.error
        assert found.draft is not None
        return found.draft

    def _lookup(self, node_id: str) -> NodeDraft | None:
        found = self._files.get(node_id)
        if found is None:
            return None
        if found.error is not None:
            raise found.error
        return found.draft

    # --- following the watch ------------------------------------------------------------

    def _on_events(self, events: Sequence[Any], revision: int) -> None:
        if self._reloading is not None:
            self._held_back.append((events, revision))
            return
        by_revision: dict[int, list[Any]] = {}
        for event in events:
            by_revision.setdefault(event.kv.mod_revision, []).append(event)
        for mod_revision in sorted(by_revision):
            if mod_revision <= self._revision:
                continue  # already part of what we read (a resumed watch repeats events)
            self._apply(by_revision[mod_revision], mod_revision)

    def _apply(self, events: list[Any], revision: int) -> None:
        changed = set()
        for event in events:
            if not event.kv.key.startswith(self._nodes_prefix):
                continue  # the version key: says nothing about which nodes changed
            node_id = event.kv.key[len(self._nodes_prefix) :].decode()
            changed.add(node_id)
            if event.type == rpc.Event.DELETE:
                self._files.pop(node_id, None)
            else:
                self._files[node_id] = self._parse(node_id, event.kv.value, self._files.get(node_id))
        self._revision = revision
        if changed:
            drafts = {nid: f.draft for nid, f in self._files.items() if f.draft is not None}
            self._publish(GraphChange(frozenset(importers_of(drafts, changed)), revision))

    def _on_resync(self, resume_revision: int) -> None:
        """The watch missed events (compaction): read everything again, then say so."""
        if self._reloading is None:
            self._reloading = asyncio.ensure_future(self._reload())
            self._reloading.add_done_callback(_log_failure)

    async def _reload(self) -> None:
        backoff = 0.1
        try:
            while True:
                try:
                    revision = await self._load_all()
                    break
                except Exception as exc:
                    log.warning("reloading graph %r from etcd failed: %s", self.name, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
        finally:
            self._reloading = None
        self._publish(GraphChange(frozenset(), revision))
        held, self._held_back = self._held_back, []
        for events, header_revision in held:
            self._on_events(events, header_revision)

    def _publish(self, change: GraphChange) -> None:
        for stream in list(self._streams):
            stream.publish(change)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("etcd graph loader: %s", task.exception())
