"""``trellis loader DIR``: a loader sidecar serving a flow directory over GraphLoader
(with Watch), as a pod serves a git-synced volume (needs the server extra)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from trellis.cli import sidecar_options
from trellis.cli.common import CliError, import_extra

COMMAND = "loader"

DESCRIPTION = """\
Serve the flow in DIR over the GraphLoader API, Watch included: an edit in DIR
reaches every server started with --loader grpc://ADDRESS (or unix:///PATH), which
reloads the changed nodes. With health, reflection, TLS/token and a graceful drain.
"""

EPILOG = """\
examples:
  trellis loader examples/tour --listen unix:///tmp/flow.sock
  trellis serve --loader unix:///tmp/flow.sock --listen 127.0.0.1:50051
  trellis conformance loader unix:///tmp/flow.sock
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="serve a flow directory (with Watch) as a loader sidecar",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="the flow directory")
    sidecar_options.add_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    server = import_extra("trellis.sidecar.server", "server", "'trellis loader'")
    from trellis.adapters.directory_loader import DirectoryLoader

    path = Path(args.dir)
    if not path.is_dir():
        raise CliError(f"{path}: not a directory", 2)
    options = sidecar_options.sidecar_options(args)
    return sidecar_options.run_sidecar(args, server.SidecarServer(options, loader=DirectoryLoader(path)))
