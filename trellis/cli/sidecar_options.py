"""Options every sidecar command shares (``trellis dispatcher``, ``trellis loader``):
where to listen, TLS and token like ``trellis serve``, and the drain grace period."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from trellis.cli.common import CliError, import_extra
from trellis.errors import TrellisError
from trellis.go_values import parse_duration

DEFAULT_SIDECAR_LISTEN = "127.0.0.1:50070"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        metavar="ADDRESS",
        default=DEFAULT_SIDECAR_LISTEN,
        help=f"HOST:PORT (port 0 = any) or unix:///PATH (default {DEFAULT_SIDECAR_LISTEN})",
    )
    parser.add_argument(
        "--grace", metavar="DURATION", default="10s", help="time running calls get to finish on SIGTERM"
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    sec = parser.add_argument_group("security (as trellis serve)")
    sec.add_argument("--tls-cert", metavar="FILE", default="", help="certificate (PEM); enables TLS")
    sec.add_argument("--tls-key", metavar="FILE", default="", help="private key (PEM)")
    sec.add_argument("--tls-client-ca", metavar="FILE", default="", help="require client certificates (mTLS)")
    sec.add_argument(
        "--token-file",
        metavar="FILE",
        default="",
        help="require 'authorization: Bearer <token>' (TRELLIS_TOKEN too)",
    )


def sidecar_options(args: argparse.Namespace) -> Any:
    import os

    server = import_extra("trellis.sidecar.server", "server", f"'trellis {args.command}'")
    try:
        grace = parse_duration(args.grace)
    except ValueError:
        raise CliError(f"--grace: {args.grace!r} is not a duration (e.g. 10s)", 2) from None
    return server.SidecarOptions(
        listen=args.listen,
        token_file=args.token_file,
        token=os.environ.get("TRELLIS_TOKEN", ""),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        grace=grace,
    )


def run_sidecar(args: argparse.Namespace, sidecar_server: Any) -> int:
    """Serve until a signal, printing the address once listening."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("trellis").setLevel(getattr(logging, args.log_level.upper()))
    server = import_extra("trellis.sidecar.server", "server", f"'trellis {args.command}'")
    try:
        asyncio.run(sidecar_server.run_until_signalled(server.announce))
    except TrellisError as exc:
        raise CliError(exc.message) from None
    return 0
