"""Publishing a flow directory to etcd, and pulling it back (``trellis graph push|pull``).

``publish`` checks the whole flow first (every file parses, no two files give
one node ID, every tool import resolves) and then writes it in ONE
transaction: changed and new nodes, deletions of removed ones and the version
key, guarded by the version it read so that two concurrent publishes cannot
interleave. Every replica's loader sees it as one GraphChange.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson
from aetcd import rpc

from trellis.adapters.etcd.client import EtcdClient, prefix_end
from trellis.adapters.etcd.config import EtcdConfig
from trellis.adapters.etcd.loader import decode_node, encode_node, graph_prefix
from trellis.errors import ConfigError, ConflictError, GraphError, NodeDefinitionError, TrellisError
from trellis.loading import DEFAULT_MAX_FILE_BYTES, NodeDraft, draft_from_bytes, resolve_tools
from trellis.loading.ids import node_extension

MAX_TXN_OPS = 128
"""etcd's default --max-txn-ops: operations one transaction may hold."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    revision: int
    nodes: int
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def read_flow(directory: str | os.PathLike[str]) -> dict[str, tuple[str, bytes]]:
    """node ID → (file path relative to ``directory``, bytes), validated.

    Hidden files and directories are skipped, as the directory loader does. Raises
    NodeDefinitionError for a file that does not parse or a tool import that does not
    resolve, GraphError for two files with one node ID or a missing directory."""
    root = Path(directory)
    if not root.is_dir():
        raise GraphError(f"graph directory '{root}' does not exist or is not a directory")
    files: list[str] = []
    for current, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(current).relative_to(root).as_posix()
        for name in sorted(filenames):
            if not name.startswith(".") and node_extension(name):
                files.append(name if base == "." else f"{base}/{name}")
    drafts: dict[str, NodeDraft] = {}
    found: dict[str, tuple[str, bytes]] = {}
    clashes: list[str] = []
    for rel in files:
        raw = (root / rel).read_bytes()
        draft = draft_from_bytes(raw, rel, source=f"{root.name}/{rel}", max_bytes=DEFAULT_MAX_FILE_BYTES)
        node_id = draft.node.id
        if node_id in found:
            clashes.append(
                f"collision detected: node ID '{node_id}' is defined by {found[node_id][0]} and {rel}"
            )
        found[node_id] = (rel, raw)
        drafts[node_id] = draft
    if clashes:
        raise GraphError("; ".join(clashes), clashes)
    for draft in drafts.values():
        resolve_tools(draft, drafts.get)
    return found


def _digest(flow: dict[str, tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for node_id in sorted(flow):
        rel, raw = flow[node_id]
        h.update(encode_node(rel, raw) + node_id.encode() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class PublishPlan:
    """What a publish would change: the diff between a directory and the stored graph."""

    revision: int
    nodes: int
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    published: bool  # the graph has a version key: it was published before

    def describe(self, name: str) -> str:
        if self.published and not (self.added or self.changed or self.removed):
            return f"graph {name!r} is already up to date ({self.nodes} nodes); nothing would change"
        lines = [
            f"graph {name!r} would be {'updated' if self.published else 'published for the first time'}"
            f" ({self.nodes} nodes); nothing was written:"
        ]
        for mark, ids in (("+", self.added), ("~", self.changed), ("-", self.removed)):
            lines += [f"  {mark} {node_id}" for node_id in ids]
        lines.append(f"{len(self.added)} added, {len(self.changed)} changed, {len(self.removed)} removed")
        return "\n".join(lines)


async def _stored(client: EtcdClient, name: str) -> tuple[Any, dict[str, bytes], int]:
    """The graph's prefix as read (for its revision), node ID → stored value, and the
    version key's mod revision (0 = never published)."""
    prefix = graph_prefix(client, name)
    nodes_prefix = prefix + b"nodes/"
    version_key = prefix + b"version"
    current = await client.call("Range", rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix)))
    stored: dict[str, bytes] = {}
    version_revision = 0
    for kv in current.kvs:
        if kv.key == version_key:
            version_revision = kv.mod_revision
        elif kv.key.startswith(nodes_prefix):
            stored[kv.key[len(nodes_prefix) :].decode()] = kv.value
    return current, stored, version_revision


async def plan(client: EtcdClient, name: str, directory: str | os.PathLike[str]) -> PublishPlan:
    """Validate ``directory`` and say what publishing it as ``name`` would change; writes nothing."""
    flow = read_flow(directory)
    current, stored, version_revision = await _stored(client, name)
    values = {node_id: encode_node(rel, raw) for node_id, (rel, raw) in flow.items()}
    return PublishPlan(
        revision=int(current.header.revision),
        nodes=len(flow),
        added=tuple(sorted(set(values) - set(stored))),
        changed=tuple(sorted(n for n, v in values.items() if n in stored and stored[n] != v)),
        removed=tuple(sorted(set(stored) - set(values))),
        published=bool(version_revision),
    )


async def publish(client: EtcdClient, name: str, directory: str | os.PathLike[str]) -> PublishResult:
    """Validate ``directory`` and publish it as graph ``name`` in one transaction."""
    flow = read_flow(directory)
    prefix = graph_prefix(client, name)
    nodes_prefix = prefix + b"nodes/"
    version_key = prefix + b"version"
    current, stored, version_revision = await _stored(client, name)
    values = {node_id: encode_node(rel, raw) for node_id, (rel, raw) in flow.items()}
    changed = sorted(node_id for node_id, value in values.items() if stored.get(node_id) != value)
    removed = sorted(set(stored) - set(values))
    if not changed and not removed and version_revision:
        return PublishResult(int(current.header.revision), len(flow), (), ())
    ops = [
        rpc.RequestOp(request_put=rpc.PutRequest(key=nodes_prefix + n.encode(), value=values[n]))
        for n in changed
    ]
    ops += [
        rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=nodes_prefix + n.encode()))
        for n in removed
    ]
    version = orjson.dumps({"digest": _digest(flow), "nodes": len(flow)})
    ops.append(rpc.RequestOp(request_put=rpc.PutRequest(key=version_key, value=version)))
    if len(ops) > MAX_TXN_OPS:
        raise GraphError(
            f"publishing graph {name!r} needs {len(ops)} operations in one transaction; etcd allows "
            f"{MAX_TXN_OPS} by default (raise etcd's --max-txn-ops, or publish a smaller change)"
        )
    guard = rpc.Compare(
        key=version_key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=version_revision
    )
    request = rpc.TxnRequest(compare=[guard], success=ops, failure=[])
    limit = client.config.max_request_bytes - 1024
    if request.ByteSize() > limit:
        raise GraphError(
            f"graph {name!r} is {request.ByteSize()} bytes as one etcd request; etcd accepts at most "
            f"{client.config.max_request_bytes} (--max-request-bytes)"
        )
    response = await client.call("Txn", request)
    if not response.succeeded:
        raise ConflictError(f"graph {name!r} was published by someone else meanwhile; publish again")
    return PublishResult(int(response.header.revision), len(flow), tuple(changed), tuple(removed))


async def pull(client: EtcdClient, name: str, directory: str | os.PathLike[str]) -> list[str]:
    """Write graph ``name`` into ``directory`` (files are created or overwritten; other
    files are left alone). Returns the paths written. Raises GraphError when the
    graph does not exist or names a path outside the directory."""
    nodes_prefix = graph_prefix(client, name) + b"nodes/"
    response = await client.call(
        "Range", rpc.RangeRequest(key=nodes_prefix, range_end=prefix_end(nodes_prefix))
    )
    if not response.kvs:
        raise GraphError(f"graph {name!r} is not published under {client.config.prefix or '/'} in etcd")
    root = Path(directory)
    files = [decode_node(kv.value) for kv in response.kvs]
    for rel, _ in files:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or "\\" in rel or not node_extension(rel):
            raise GraphError(f"graph {name!r} holds an unsafe file path {rel!r}; nothing written")
    written = []
    for rel, raw in files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
        written.append(rel)
    return sorted(written)


# --- command line -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trellis graph",
        description="Publish a flow directory to etcd (push) or write a published flow to a "
        "directory (pull).",
    )
    parser.add_argument("verb", choices=("push", "pull"))
    parser.add_argument("dir", help="the flow directory")
    parser.add_argument(
        "--etcd",
        required=True,
        help="etcd endpoints, host:port[,host:port...], or an etcd://... URL (see docs/etcd.md)",
    )
    parser.add_argument("--graph", required=True, help="the graph's name in etcd")
    parser.add_argument("--prefix", help="key prefix of the deployment (default /trellis)")
    parser.add_argument("--ca", help="CA certificate (PEM) to verify etcd")
    parser.add_argument("--cert", help="client certificate (PEM)")
    parser.add_argument("--key", help="client key (PEM)")
    parser.add_argument("--user", help="etcd user; the password is read from $TRELLIS_ETCD_PASSWORD")
    parser.add_argument(
        "--entry",
        metavar="NODE",
        help="push: the entry node the replicas serve, checked by the validation "
        "(default: start, main, index or the directory's name, when one exists)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="push: publish even when 'trellis validate' reports errors in the flow",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="push: print the nodes that would be added, changed and removed; publish nothing",
    )
    return parser


def _config(args: argparse.Namespace) -> EtcdConfig:
    config = EtcdConfig.from_url(args.etcd if args.etcd.startswith("etcd:") else f"etcd://{args.etcd}")
    changes: dict[str, Any] = {}
    if args.prefix is not None:
        changes["prefix"] = "/" + args.prefix.strip("/") if args.prefix.strip("/") else ""
    for flag, field in (("ca", "ca_file"), ("cert", "cert_file"), ("key", "key_file"), ("user", "username")):
        if getattr(args, flag):
            changes[field] = getattr(args, flag)
    if args.user:
        changes["password"] = os.environ.get("TRELLIS_ETCD_PASSWORD", "")
    return dataclasses.replace(config, **changes)


def process_tools_notice(directory: str | os.PathLike[str]) -> str:
    """What to say when the flow's tools.yaml names process tools: graph push publishes
    nodes, not tools, so in the etcd mode those tools must be served by a sidecar next
    to every server; a server without one hands each call back to its client."""
    from trellis.adapters.process_dispatcher import load_tools

    try:
        tools = sorted(tool.name for tool in load_tools(Path(directory) / "tools.yaml"))
    except ConfigError as exc:
        return f"notice: {exc.message} (graph push does not publish tools.yaml)"
    if not tools:
        return ""
    return (
        f"notice: {Path(directory) / 'tools.yaml'} names process tools ({', '.join(tools)}), which "
        "graph push does not publish. Servers of this graph run them only through a dispatcher "
        "sidecar: run `trellis dispatcher --tools tools.yaml --listen unix:///PATH` (or "
        "HOST:PORT) next to each server and start the server with `--sidecar unix:///PATH`; "
        "a server without one returns these calls to its clients as pending CALL_TOOL actions."
    )


async def _run(args: argparse.Namespace) -> str:
    config = _config(args)
    if args.verb == "push":
        read_flow(args.dir)  # a broken flow is reported without waiting for etcd
        notice = process_tools_notice(args.dir)
        if notice:
            print(notice, file=sys.stderr)
    async with EtcdClient(config) as client:
        if args.verb == "push" and args.dry_run:
            return (await plan(client, args.graph, args.dir)).describe(args.graph)
        if args.verb == "push":
            result = await publish(client, args.graph, args.dir)
            if not result.changed and not result.removed:
                return f"graph {args.graph!r} is already up to date ({result.nodes} nodes)"
            return (
                f"published graph {args.graph!r}: {result.nodes} nodes, {len(result.changed)} changed, "
                f"{len(result.removed)} removed (etcd revision {result.revision})"
            )
        written = await pull(client, args.graph, args.dir)
        return f"wrote {len(written)} files of graph {args.graph!r} to {args.dir}"


def main(argv: Sequence[str] | None = None) -> int:
    """``trellis graph push|pull DIR --etcd ENDPOINTS --graph NAME [--prefix P]``.
    Exit status: 0 done, 1 the flow or etcd refused it, 2 bad usage."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        print(asyncio.run(_run(args)))
    except (TrellisError, OSError) as exc:
        message = exc.message if isinstance(exc, TrellisError) else str(exc)
        kind = "invalid node" if isinstance(exc, NodeDefinitionError) else "error"
        print(f"trellis graph {args.verb}: {kind}: {message}", file=sys.stderr)
        return 1
    return 0
