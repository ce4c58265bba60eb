"""``trellis dispatcher``: a dispatcher sidecar serving process tools and Python functions
over ActionDispatcher (needs the server extra, imported when the command runs)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from trellis.cli import sidecar_options
from trellis.cli.common import CliError, import_extra
from trellis.errors import TrellisError

COMMAND = "dispatcher"

DESCRIPTION = """\
Serve tools from this process over the ActionDispatcher API, for a trellis server
started with --dispatcher or --sidecar pointing here:

  --tools FILE          the process tools of a tools.yaml (each call runs its command)
  --function REF        a Python function, REF = [NAME=]module:function; its keyword
                        arguments are the call's arguments (repeatable)
  --entry-points GROUP  every function of an entry-point group (the entry point's name
                        is the tool's)

Every call is checked: a stale fencing token is refused, arguments are validated
against the tool's schema, a retried call (same idempotency key) runs once. With
health, reflection and a graceful drain on SIGTERM. See docs/sidecars.md.
"""

EPILOG = """\
examples:
  trellis dispatcher --tools examples/tour/tools.yaml --listen 127.0.0.1:50070
  trellis dispatcher --function greet=mytools:greet --listen unix:///tmp/tools.sock
  trellis conformance dispatcher 127.0.0.1:50070
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="serve tools (tools.yaml, Python functions) as a dispatcher sidecar",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tools", metavar="FILE", help="a tools.yaml of process tools")
    parser.add_argument(
        "--function", metavar="REF", action="append", default=[], help="[NAME=]module:function (repeatable)"
    )
    parser.add_argument("--entry-points", metavar="GROUP", help="serve the functions of an entry-point group")
    sidecar_options.add_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    kit = import_extra("trellis.sidecar", "server", "'trellis dispatcher'")
    options = sidecar_options.sidecar_options(args)
    sidecar = kit.Sidecar()
    try:
        if args.tools:
            from trellis.adapters.process_dispatcher import ProcessDispatcher

            path = Path(args.tools)
            if not path.is_file():
                raise CliError(f"--tools: {path} is not a file", 2)
            sidecar.add_process_tools(ProcessDispatcher.from_file(path))
        for ref in args.function:
            name, function = _function(ref)
            sidecar.add_function(function, name=name)
        if args.entry_points:
            points = entry_points(group=args.entry_points)
            if not points:
                raise CliError(f"--entry-points: no entry points in the group {args.entry_points!r}", 2)
            for point in points:
                sidecar.add_function(point.load(), name=point.name)
    except TrellisError as exc:
        raise CliError(exc.message, 2) from None
    if not sidecar.serves_any():
        raise CliError("no tools to serve: give --tools, --function or --entry-points", 2)
    return sidecar_options.run_sidecar(args, kit.SidecarServer(options, dispatcher=sidecar))


def _function(ref: str) -> tuple[str | None, Any]:
    name, sep, target = ref.partition("=")
    if not sep:
        name, target = "", ref
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise CliError(f"--function: {ref!r} is not [NAME=]module:function", 2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules of the working directory
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"--function: cannot import {module_name!r}: {exc}", 2) from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise CliError(f"--function: {module_name}:{attribute} is not a function", 2)
    return name or None, function
