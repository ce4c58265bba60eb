"""``trellis run DIR``: walk a flow in the terminal (or as JSON lines for programs)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from trellis.cli.common import (
    CliError,
    flow_dir,
    import_extra,
    parse_context,
    run_async,
    store_dir,
    watch_session_id,
)

COMMAND = "run"
EPHEMERAL_SESSION = "cli"

EPILOG = """\
examples:
  trellis run examples/tour                          walk the tour; nothing is saved
  trellis run examples/tour --session me             save every step; run it again to resume
  trellis run examples/tour --session me --fresh     forget the saved session and start over
  trellis run examples/tour -c name=Ada -c visits=3  seed the context of a new session
  trellis run examples/saga --yes                    run the saga's tools without asking
  trellis run examples/tour --watch                  re-read the flow whenever a file changes
  printf 'Ada\\nfinish\\n\\n' | trellis run examples/tour --json

While a prompt waits: a number or an option's text picks an option; Enter takes the
default; q, quit or exit ends the run (a saved session can be resumed), and a leading
backslash sends the rest as typed (\\q answers a literal q); Ctrl+C sends the
'interrupt' signal to the flow (exit code 130 when no node handles it); a prompt
with a timeout sends the 'timeout' signal when it passes.

--json: one JSON object per line on standard output ({"type": "step"|"tool"|
"notice"|"error"|"end", ...}); each input line is text input, or a JSON object
{"input": value} | {"signal": name} | {"tool_result": {...}} | {"quit": true}.
Declared tools run without confirmation in this mode; calls no declared tool serves
are answered by the program with a tool_result.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="walk a flow interactively",
        description="Walk the flow in DIR: show each node, ask for input, run its tools.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="the flow directory")
    parser.add_argument(
        "--session", "-s", metavar="ID", help="save the session under ID and resume it if it exists"
    )
    parser.add_argument(
        "--store-dir", metavar="PATH", help="where sessions are saved (default: DIR/.trellis/sessions)"
    )
    parser.add_argument("--fresh", action="store_true", help="delete the saved session first and start over")
    parser.add_argument(
        "--context",
        "-c",
        action="append",
        metavar="KEY=VALUE",
        help="seed the context of a new session (repeatable; VALUE is read as JSON when it parses, "
        "else as a string; a JSON object is merged as a whole)",
    )
    parser.add_argument(
        "--locale", metavar="TAG", help="the locale of a new session (picks the messages of format nodes)"
    )
    parser.add_argument("--yes", "-y", action="store_true", help="run tools without asking for confirmation")
    parser.add_argument(
        "--tools",
        metavar="FILE",
        help="the tool registry (default: DIR/tools.yaml or DIR/tools.json; missing means no tools)",
    )
    parser.add_argument(
        "--unsafe-inline",
        action="store_true",
        help="allow nodes to run the command in their own metadata (x-exec); only for flows you trust",
    )
    parser.add_argument(
        "--watch",
        "-w",
        action="store_true",
        help="reload the flow when its files change (implies a saved session)",
    )
    parser.add_argument(
        "--html",
        action="store_true",
        help="HTML-escape the values templates interpolate (as 'trellis serve --html')",
    )
    parser.add_argument(
        "--no-error-node",
        action="store_true",
        help="no default error node, even when the flow has an 'error' node",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines in and out, for programs")
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="drive a session kept by a trellis server (trellis serve) instead of running the flow "
        "here; DIR's tools.yaml runs the tool calls the server leaves to the client",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.server:
        remote_run = import_extra("trellis.cli.remote_run", "client", "'trellis run --server'")

        return int(remote_run.handle_remote(args))
    # Imported here so that `trellis --help` does not pay for the engine's imports.
    from trellis.adapters.file_store import FileStore
    from trellis.adapters.memory_store import MemoryStore
    from trellis.adapters.process_dispatcher import ProcessDispatcher
    from trellis.cli.inputs import InputSource
    from trellis.cli.project import open_flow
    from trellis.cli.runner import Runner, RunOptions
    from trellis.cli.views import JsonLinesView, TerminalView, View
    from trellis.errors import TrellisError
    from trellis.ports.store import StateStore
    from trellis.sessions import SessionManager

    directory = flow_dir(args.dir)
    context = parse_context(args.context)
    persistent = bool(args.session) or args.watch
    session_id = args.session or (watch_session_id(directory) if args.watch else EPHEMERAL_SESSION)
    store: StateStore = FileStore(store_dir(directory, args.store_dir)) if persistent else MemoryStore()
    view: View = (
        JsonLinesView() if args.json else TerminalView(auto_approve=args.yes, echo=not sys.stdin.isatty())
    )

    async def main() -> int:
        flow = open_flow(directory, html=args.html, error_node=not args.no_error_node)
        tools_file = args.tools or flow.tools_file
        dispatcher = ProcessDispatcher.from_file(tools_file, allow_inline=args.unsafe_inline)
        # One process drives the session, step after step: no locker needed.
        manager = SessionManager(flow.engine, store)
        watcher: asyncio.Task[None] | None = None
        async with InputSource(sys.stdin.buffer) as inputs:
            if args.watch:
                watcher = asyncio.create_task(_follow(flow, inputs))
            runner = Runner(
                manager,
                store,
                view,
                inputs,
                dispatcher,
                RunOptions(
                    session_id,
                    persistent,
                    fresh=args.fresh,
                    context=context,
                    watch=args.watch,
                    locale=args.locale or "",
                ),
                repair=manager.repair_after_reload,
            )
            try:
                return await runner.run()
            except TrellisError as exc:
                view.error(exc.reason, exc.message)
                raise
            except CliError as exc:
                view.error("CLI_ERROR", exc.message)
                raise
            finally:
                if watcher is not None:
                    watcher.cancel()
                await flow.loader.aclose()

    try:
        return run_async(main)
    except asyncio.CancelledError:  # Ctrl+C twice while a tool was running
        print("Interrupted.", file=sys.stderr)
        return 130


async def _follow(flow: Any, inputs: Any) -> None:
    """Keep the engine's compiled nodes fresh and tell the runner to re-render."""
    from trellis.engine.follow import follow_graph

    await follow_graph(flow.engine, flow.loader, on_change=lambda _change: inputs.notify_reload())
