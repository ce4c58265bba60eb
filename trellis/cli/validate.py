"""``trellis validate DIR``: report every problem of a flow, each with file and field."""

from __future__ import annotations

import argparse
import json
from typing import Any

from trellis.cli.common import flow_dir, run_async

COMMAND = "validate"

EPILOG = """\
examples:
  trellis validate examples/tour            human-readable report
  trellis validate examples/tour --strict   warnings fail too
  trellis validate examples/tour --json     machine-readable report

Errors (exit code 1): files that do not load (bad YAML/JSON, wrongly typed fields,
tool import cycles), ID collisions, a missing entry node, edges to nodes that do not
exist (transitions, on_error, on_denied, on_signal, on_signal_default; 'rollback' is
not a node), a node with both 'do' and input, 'type: tool' without 'do', templates
that do not compile (content, messages, tool args), conditions that do not compile
(CEL), context_schema types and timeouts that are not valid.

Warnings (exit code 0 unless --strict): nodes not reachable from the entry (following
every kind of edge), tools not declared in tools.yaml, on_signal_default on a node
other than the entry.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="check a flow for errors",
        description="Check the flow in DIR and report every problem found, with its file and field.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="the flow directory")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trellis.adapters.directory_loader import entry_node_id, has_default_error_node
    from trellis.cli.project import DEFAULT_ERROR_NODE
    from trellis.cli.validation import validate_flow

    directory = flow_dir(args.dir)
    entry = entry_node_id(directory)
    error_node = DEFAULT_ERROR_NODE if has_default_error_node(directory) else ""
    report = run_async(lambda: validate_flow(directory, entry, default_error_node=error_node))
    failed = bool(report.errors) or (args.strict and bool(report.warnings))
    if args.json:
        print(
            json.dumps(
                {
                    "valid": not failed,
                    "flow": args.dir,
                    "entry": report.entry,
                    "nodes": report.node_count,
                    "errors": [p.to_json() for p in report.errors],
                    "warnings": [p.to_json() for p in report.warnings],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 1 if failed else 0
    for problem in report.problems:
        print(problem)
    counts = f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
    if failed:
        print(f"Validation failed: {counts}.")
        return 1
    extra = f" ({len(report.warnings)} warning(s))" if report.warnings else ""
    print(f"Flow is valid: {report.node_count} nodes, entry '{report.entry}'{extra}.")
    return 0
