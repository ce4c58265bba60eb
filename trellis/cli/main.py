"""Entry point of the ``trellis`` command line.

Each subcommand lives in its own module with ``register(subparsers)``; the module
names are listed in SUBCOMMAND_MODULES. Every module imports with the core alone;
what needs an extra (``serve``, ``graph push``, ``run --server``) imports it when
the command runs and says which extra to install when it is missing. A module may also define
``dispatch_raw(args) -> int | None`` to take over its command's arguments before
argparse sees them (``trellis graph push ...`` is routed that way).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from trellis import __version__
from trellis.cli.common import CliError, fail

SUBCOMMAND_MODULES: list[str] = [
    "trellis.cli.run",
    "trellis.cli.validate",
    "trellis.cli.graph",
    "trellis.cli.session",
    "trellis.cli.serve",
    "trellis.cli.dispatcher",
    "trellis.cli.loader",
    "trellis.cli.conformance",
    "trellis.cli.mcp",
]

EPILOG = """\
examples:
  trellis run examples/tour                 walk a flow in the terminal (also: trellis examples/tour)
  trellis run examples/tour --session demo  keep the session on disk and resume it later
  trellis validate examples/tour            check every node, edge, template and condition
  trellis graph examples/tour               print the flow as a Mermaid diagram
  trellis session ls --dir examples/tour    list the saved sessions of a flow

Run 'trellis <command> --help' for the options of one command.
"""

Handler = Callable[[argparse.Namespace], int]


def _load_modules() -> list[object]:
    return [importlib.import_module(name) for name in SUBCOMMAND_MODULES]


def build_parser(modules: Sequence[object] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trellis",
        description="trellis: a deterministic flow engine. Walk, check and draw flows defined as "
        "Markdown/YAML/JSON files, and manage their saved sessions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trellis {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for module in modules if modules is not None else _load_modules():
        register = getattr(module, "register", None)
        if callable(register):
            register(subparsers)
    return parser


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:  # argparse offers no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    modules = _load_modules()
    try:
        if args and not args[0].startswith("-"):
            for module in modules:
                dispatch_raw = getattr(module, "dispatch_raw", None)
                command = getattr(module, "COMMAND", None)
                if callable(dispatch_raw) and command == args[0]:
                    code = dispatch_raw(args[1:])
                    if code is not None:
                        return cast(int, code)
        parser = build_parser(modules)
        if (
            args
            and not args[0].startswith("-")
            and args[0] not in _commands(parser)
            and Path(args[0]).is_dir()
        ):
            args.insert(0, "run")  # `trellis DIR` runs the flow, as the original did
        namespace = parser.parse_args(args)
        handler = getattr(namespace, "handler", None)
        if handler is None:
            parser.print_help()
            return 2
        return cast(Handler, handler)(namespace)
    except CliError as exc:
        return fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
