"""``trellis conformance dispatcher|loader ADDRESS``: check a sidecar, whatever its language,
on the wire, and print a pass/fail table (needs the server extra)."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from trellis.cli.common import CliError, import_extra

COMMAND = "conformance"

DESCRIPTION = """\
Check a sidecar on the wire: what a trellis server relies on. ADDRESS is HOST:PORT,
grpc://HOST:PORT or unix:///PATH (options as in server URLs: ?tls=1&ca=FILE&token_file=FILE).

  dispatcher  health; ListTools shape; an unknown tool and invalid arguments are
              error results, not RPC errors; a retry with the same idempotency key
              is not run again; a stale fencing token is refused; the deadline in
              the dispatch context is honoured. The last checks use an echo tool
              (returns its arguments) and a sleep tool ({"seconds": N}) when listed.
  loader      health; ListNodes; GetNode of each node; an unknown node is
              NOT_FOUND; Watch stays open.

Exit status 0 when nothing failed (skipped checks do not fail), 1 otherwise.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="check a dispatcher or loader sidecar on the wire (pass/fail table)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=["dispatcher", "loader"])
    parser.add_argument("address", metavar="ADDRESS")
    parser.add_argument("--echo", default="echo", metavar="TOOL", help="the echo tool's name (default echo)")
    parser.add_argument(
        "--sleep", default="sleep", metavar="TOOL", help="the sleep tool's name (default sleep)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    checks_module = import_extra("trellis.sidecar.conformance", "server", "'trellis conformance'")
    from trellis.api.transport import ChannelOptions
    from trellis.errors import TrellisError

    token = os.environ.get("TRELLIS_TOKEN", "")

    async def run() -> list[Any]:
        channel = checks_module.channel_for(args.address, ChannelOptions(token=token))
        try:
            if args.kind == "dispatcher":
                return list(await checks_module.DispatcherChecks(channel, args.echo, args.sleep).run())
            return list(await checks_module.LoaderChecks(channel).run())
        finally:
            await channel.close()

    try:
        checks = asyncio.run(run())
    except TrellisError as exc:
        raise CliError(exc.message, 2) from None
    print(f"conformance of the {args.kind} at {args.address}")
    print(checks_module.table(checks))
    return 1 if any(c.outcome == checks_module.FAIL for c in checks) else 0
