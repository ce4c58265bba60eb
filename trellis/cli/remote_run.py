"""``trellis run --server HOST:PORT DIR``: the terminal loop of ``trellis run`` over a
session kept by a trellis server.

The runner (trellis.cli.runner) is the same as for a local run; only its session
driver differs: every start/navigate/signal is a call to the server's Sessions
service, and the server runs the tools its dispatchers serve. Tool calls it leaves
to the client come back here and are run from DIR's tools.yaml (with the same
confirmation as a local run), or answered by the program in --json mode.

Without --session the run uses a fresh session ID and deletes the session when it
ends, as a local run keeps nothing; with --session it is resumed and kept. The
bearer token of a protected server comes from TRELLIS_TOKEN (or ``?token_file=``
in the target, with ``ca=``/``cert=``/``key=`` for TLS).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys

from trellis.cli.common import CliError, flow_dir, parse_context, run_async
from trellis.clients.client import Client
from trellis.domain import State
from trellis.errors import InvalidInput
from trellis.ports.locker import LockHandle
from trellis.ports.store import SessionPage

TOKEN_ENV = "TRELLIS_TOKEN"


def handle_remote(args: argparse.Namespace) -> int:
    from trellis.adapters.process_dispatcher import ProcessDispatcher
    from trellis.cli.inputs import InputSource
    from trellis.cli.runner import Runner, RunOptions
    from trellis.cli.views import JsonLinesView, TerminalView, View
    from trellis.errors import BackendUnavailable, TrellisError

    for flag, given in (("--watch", args.watch), ("--store-dir", args.store_dir)):
        if given:
            raise CliError(f"{flag} is not available with --server: the server keeps and reloads the flow", 2)
    if args.locale:
        # Setting it means saving the state as is, which only the server's internal
        # StateStore accepts (never served on its public port).
        raise CliError("--locale is not available with --server: a server session keeps its own locale", 2)
    directory = flow_dir(args.dir)
    context = parse_context(args.context)
    persistent = bool(args.session)
    session_id = args.session or f"run-{secrets.token_hex(6)}"
    tools_file = args.tools or str(directory / "tools.yaml")
    view: View = (
        JsonLinesView() if args.json else TerminalView(auto_approve=args.yes, echo=not sys.stdin.isatty())
    )

    async def main() -> int:
        client = Client(args.server, token=os.environ.get(TOKEN_ENV, ""))
        try:
            try:
                await client.health()
            except BackendUnavailable as exc:
                raise CliError(f"cannot reach the trellis server at {args.server}: {exc.message}") from None
            dispatcher = ProcessDispatcher.from_file(tools_file, allow_inline=args.unsafe_inline)
            store = SessionsView(client)
            async with InputSource(sys.stdin.buffer) as inputs:
                runner = Runner(
                    client.sessions,
                    store,
                    view,
                    inputs,
                    dispatcher,
                    RunOptions(
                        session_id, persistent, fresh=args.fresh, context=context, locale=args.locale or ""
                    ),
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
                    if not persistent:
                        await _forget(client, session_id)
        finally:
            await client.close()

    try:
        return run_async(main)
    except asyncio.CancelledError:  # Ctrl+C twice while a tool was running
        print("Interrupted.", file=sys.stderr)
        return 130


async def _forget(client: Client, session_id: str) -> None:
    """Delete the throw-away session of a run without --session (best effort: a server
    that went away keeps it, which only costs it memory)."""
    try:
        async with asyncio.timeout(5):
            await client.sessions.delete(session_id)
    except Exception:
        pass  # nothing useful to tell the user at the end of the run


class SessionsView:
    """The runner's StateStore over the server's public Sessions service: stored sessions
    are read through ``Sessions.Get``; a state is never written as is (the server's
    StateStore, which would, is only on its internal listener)."""

    def __init__(self, client: Client) -> None:
        self._sessions = client.sessions

    async def load(self, session_id: str) -> State:
        return (await self._sessions.get(session_id)).state

    async def save(
        self,
        session_id: str,
        state: State,
        *,
        expected_revision: int | None = None,
        fence: LockHandle | None = None,
    ) -> int:
        raise InvalidInput(f"session {session_id!r}: a server session changes only by its steps")

    async def delete(self, session_id: str) -> None:
        await self._sessions.delete(session_id)

    async def list(self, page_size: int = 0, page_token: str = "") -> SessionPage:
        return await self._sessions.list(page_size, page_token)
