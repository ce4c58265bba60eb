"""Helpers shared by the subcommands: errors, flow directories, context options."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from trellis.errors import TrellisError

T = TypeVar("T")

STORE_SUBDIR = Path(".trellis") / "sessions"


class CliError(Exception):
    """A problem to report as ``Error: <message>`` with an exit code, never a traceback."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def fail(message: str, exit_code: int = 1) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return exit_code


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine, turning the library's errors into CliError."""
    try:
        return asyncio.run(_as_coroutine(make))
    except TrellisError as exc:
        raise CliError(exc.message) from None
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def flow_dir(path: str) -> Path:
    """The flow directory given on the command line; it must exist."""
    directory = Path(path)
    if not directory.exists():
        raise CliError(f"flow directory '{path}' does not exist")
    if not directory.is_dir():
        raise CliError(f"'{path}' is not a directory (expected a flow directory)")
    return directory


def store_dir(flow: Path, option: str | None) -> Path:
    """Where sessions are kept: ``--store-dir`` or ``<flow>/.trellis/sessions``.

    One rule for ``run`` and ``session`` (docs/engine-differences.md, fix #14: the original used the
    working directory for one and the flow directory for the other).
    """
    return Path(option) if option else flow / STORE_SUBDIR


def watch_session_id(flow: Path) -> str:
    """A stable session ID per flow directory for ``--watch`` without ``--session``."""
    digest = hashlib.md5(str(flow.resolve()).encode(), usedforsecurity=False).hexdigest()
    return f"watch-{digest[:8]}"


def parse_context(items: list[str] | None) -> dict[str, Any]:
    """``--context key=value`` (value read as JSON when it parses, else a string),
    or ``--context '{"k": ...}'`` (a JSON object merged in)."""
    context: dict[str, Any] = {}
    for item in items or []:
        stripped = item.strip()
        if stripped.startswith("{"):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise CliError(f"--context {item!r}: invalid JSON object ({exc.msg})") from None
            if not isinstance(value, Mapping):
                raise CliError(f"--context {item!r}: expected a JSON object")
            context.update(value)
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--context {item!r}: expected key=value or a JSON object")
        try:
            context[key] = json.loads(raw)
        except json.JSONDecodeError:
            context[key] = raw
    return context


def import_extra(module: str, extra: str, what: str) -> Any:
    """Import ``module``, which needs the optional dependencies of ``extra``: when one is
    missing, a CliError says which install brings it instead of a traceback."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == "trellis" or missing.startswith("trellis."):
            raise  # our own module missing is a bug, not an extra to install
        raise CliError(
            f"{what} needs the '{extra}' extra (missing module {missing!r}): "
            f"pip install 'trellis-flow[{extra}]'"
        ) from None
