"""``trellis graph``: print a flow as Mermaid; ``graph push|pull`` publish to etcd."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from typing import Any

from trellis.cli.common import flow_dir, import_extra, run_async, store_dir
from trellis.cli.project import open_flow, tool_registry_ids
from trellis.domain import Node, State
from trellis.mermaid import render_mermaid

COMMAND = "graph"
PUBLISH_MODULE = "trellis.adapters.etcd.publish"
PUBLISH_VERBS = ("push", "pull")

EPILOG = """\
examples:
  trellis graph examples/tour                   Mermaid flowchart of the tour
  trellis graph examples/tour --session demo    ... with the path of session 'demo' highlighted
  trellis graph examples/tour > tour.mmd        save it for a Mermaid viewer

publishing to etcd (distributed mode):
  trellis graph push DIR --etcd 127.0.0.1:2379 --graph NAME   publish a flow directory
  trellis graph pull DIR --etcd 127.0.0.1:2379 --graph NAME   write a published flow to DIR
  (run 'trellis graph push --help' for their options)

Nodes are sorted by ID; edges between folders (sub-graphs) are dotted; signal
edges are marked with ⚡ (a default handler once, labelled "(default)"); on_error
and on_denied edges are labelled so.

'graph push' validates the flow as 'trellis validate' does and refuses one with
errors (--force publishes anyway); --dry-run prints what would change.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="print a flow as a Mermaid diagram (or push/pull it to etcd)",
        description="Print the flow in DIR as a Mermaid flowchart on standard output.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="the flow directory")
    parser.add_argument(
        "--session", "-s", metavar="ID", help="highlight the visited and current nodes of a saved session"
    )
    parser.add_argument(
        "--store-dir",
        metavar="PATH",
        help="where sessions are saved (default: DIR/.trellis/sessions, as for 'trellis run')",
    )
    parser.set_defaults(handler=handle)


def dispatch_raw(args: list[str]) -> int | None:
    """Route ``trellis graph push|pull ...`` to the etcd publisher, imported only then."""
    if not args or args[0] not in PUBLISH_VERBS:
        return None
    module = import_extra(PUBLISH_MODULE, "etcd", f"'trellis graph {args[0]}'")
    if args[0] == "push" and "--force" not in args and not {"-h", "--help"} & set(args):
        refused = _refuse_invalid(module, args)
        if refused is not None:
            return refused
    code = module.main(list(args))
    return int(code)


def _refuse_invalid(publisher: Any, args: list[str]) -> int | None:
    """Validate the directory ``push`` would publish like ``trellis validate``: print the
    problems; an error refuses the push (exit 1). None: go on publishing."""
    from pathlib import Path

    from trellis.adapters.directory_loader import entry_node_id, has_default_error_node
    from trellis.cli.project import DEFAULT_ERROR_NODE
    from trellis.cli.validation import validate_flow

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the publisher prints usage errors once
            parsed, _ = publisher.build_parser().parse_known_args(args)
    except SystemExit:
        return None  # a usage error: the publisher reports it
    directory = Path(parsed.dir)
    if not directory.is_dir():
        return None  # the publisher reports a missing directory itself
    error_node = DEFAULT_ERROR_NODE if has_default_error_node(directory) else ""
    entry = parsed.entry or entry_node_id(directory)
    report = run_async(lambda: validate_flow(directory, entry, default_error_node=error_node))
    if not parsed.entry:
        # Replicas may serve the graph with their own --entry: without one named here, a
        # directory lacking start/main/index is not an error (nor checked for reachability).
        report.problems = [p for p in report.problems if p.field != "entry"]
    for problem in report.problems:
        print(problem, file=sys.stderr)
    if report.errors:
        print(
            f"trellis graph push: refusing to publish {directory}: {len(report.errors)} error(s) "
            "(see 'trellis validate'; --force publishes anyway)",
            file=sys.stderr,
        )
        return 1
    return None


def handle(args: argparse.Namespace) -> int:
    directory = flow_dir(args.dir)

    async def build() -> str:
        flow = open_flow(directory)
        registry = tool_registry_ids(directory)
        nodes: list[Node] = [n for n in await flow.engine.inspect() if n.id not in registry]
        state: State | None = None
        if args.session:
            from trellis.adapters.file_store import FileStore

            state = await FileStore(store_dir(directory, args.store_dir)).load(args.session)
        return render_mermaid(nodes, state, entry=flow.entry)

    print(run_async(build), end="")
    return 0
