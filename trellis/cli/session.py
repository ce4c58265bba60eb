"""``trellis session ls|show|rm``: the sessions saved by ``trellis run --session``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from trellis.adapters.file_store import FileStore
from trellis.cli.common import CliError, run_async, store_dir
from trellis.errors import TrellisError

COMMAND = "session"

EPILOG = """\
examples:
  trellis session ls --dir examples/tour         list the sessions saved for the tour
  trellis session show demo --dir examples/tour  print the state of session 'demo' as JSON
  trellis session rm demo other --dir examples/tour

Sessions live in DIR/.trellis/sessions (the same place 'trellis run DIR --session ID'
uses), or in --store-dir when given.
"""


def _store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", "-d", default=".", metavar="DIR", help="the flow directory (default: .)")
    parser.add_argument(
        "--store-dir", metavar="PATH", help="the session directory (default: DIR/.trellis/sessions)"
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        help="list, show or remove saved sessions",
        description="Manage the sessions that 'trellis run --session' saved on disk.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", metavar="<verb>", title="verbs")

    ls = verbs.add_parser(
        "ls",
        aliases=["list"],
        help="list saved sessions",
        description="List saved sessions: ID, status and current node.",
        epilog="example:\n  trellis session ls --dir examples/tour",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _store_options(ls)
    ls.add_argument("--json", action="store_true", help="print a JSON array of {id, node, status}")
    ls.set_defaults(handler=handle_ls)

    show = verbs.add_parser(
        "show",
        aliases=["inspect"],
        help="print one session's state",
        description="Print a session's state as JSON.",
        epilog="example:\n  trellis session show demo --dir examples/tour",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("id", metavar="ID", help="the session ID")
    _store_options(show)
    show.set_defaults(handler=handle_show)

    rm = verbs.add_parser(
        "rm",
        help="remove sessions",
        description="Remove one or more saved sessions (exit code 1 if any did not exist).",
        epilog="example:\n  trellis session rm demo other --dir examples/tour",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rm.add_argument("ids", metavar="ID", nargs="+", help="the session IDs")
    _store_options(rm)
    rm.set_defaults(handler=handle_rm)

    parser.set_defaults(handler=lambda _args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _store(args: argparse.Namespace) -> FileStore:
    return FileStore(store_dir(Path(args.dir), args.store_dir))


def handle_ls(args: argparse.Namespace) -> int:
    store = _store(args)

    async def collect() -> list[dict[str, str]]:
        rows: list[dict[str, str]] = []
        for session_id in (await store.list()).session_ids:
            try:
                state = await store.load(session_id)
            except TrellisError as exc:
                rows.append({"id": session_id, "node": "", "status": f"unreadable: {exc.message}"})
                continue
            rows.append({"id": session_id, "node": state.current_node_id, "status": state.status.value})
        return rows

    rows = run_async(collect)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("No active sessions found.")
        return 0
    width = max(len(row["id"]) for row in rows)
    for row in rows:
        print(f"{row['id']:<{width}}  {row['status']:<16}  {row['node']}")
    return 0


def handle_show(args: argparse.Namespace) -> int:
    store = _store(args)
    state = run_async(lambda: store.load(args.id))
    document = state.to_json()
    document["revision"] = state.revision
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0


def handle_rm(args: argparse.Namespace) -> int:
    store = _store(args)

    async def remove() -> list[str]:
        problems: list[str] = []
        existing = set((await store.list()).session_ids)
        for session_id in args.ids:
            if session_id not in existing:
                problems.append(f"session '{session_id}' not found")
                continue
            try:
                await store.delete(session_id)
            except TrellisError as exc:
                problems.append(f"session '{session_id}': {exc.message}")
                continue
            print(f"Removed session '{session_id}'")
        return problems

    problems = run_async(remove)
    if problems:
        raise CliError("; ".join(problems))
    return 0
