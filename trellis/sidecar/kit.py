"""Sidecar: the tools of one sidecar process and the rules every call goes through.

A tool is a decorated function (async or plain; a plain one runs in a worker thread so
it cannot stall the other calls)::

    sidecar = Sidecar()

    @sidecar.tool(idempotent=True, timeout=5)
    async def greet(name: str) -> dict:
        return {"greeting": f"hello {name}"}

or a process tool of a ``tools.yaml`` (``add_process_tools``). Every call, whatever the
tool: the fencing token is checked against the session's largest (a stale one is refused
with LockLost, before anything runs); the arguments are checked against the tool's JSON
Schema (a mismatch is an error result naming the argument); the call runs once per
idempotency key (trellis.sidecar.guards); the attempt is bounded by the tool's timeout
and the caller's deadline; an exception becomes an error result typed by its class.
``Sidecar`` is an ActionDispatcher that lists its tools, so any trellis server code can
serve it; ``run``/``serve`` (trellis.sidecar.server) put it on a socket.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from trellis.adapters.process_dispatcher import ProcessDispatcher
from trellis.dispatching import (
    INVALID_ARGUMENTS_ERROR,
    TIMEOUT_ERROR,
    TOOL_NOT_FOUND_ERROR,
    DispatchContext,
    RetryPolicy,
    ToolInfo,
)
from trellis.domain import JSONValue, ToolCall, ToolResult
from trellis.errors import ConfigError, LockLost
from trellis.sidecar.guards import FenceBook, IdempotencyCache
from trellis.sidecar.schema import problems, schema_of
from trellis.sidecar.server import SidecarOptions, SidecarServer, announce

LOG = logging.getLogger("trellis.sidecar")

Runner = Callable[[ToolCall, DispatchContext], Awaitable[ToolResult]]

# A tool function receives the dispatch context when it has a parameter of this name.
CONTEXT_PARAMETER = "context"


@dataclass(frozen=True, slots=True)
class _Entry:
    info: ToolInfo
    run: Runner


class Sidecar:
    def __init__(
        self,
        *,
        max_keys: int = 10_000,
        key_ttl: float = 600.0,
        max_sessions: int = 100_000,
    ) -> None:
        self._tools: dict[str, _Entry] = {}
        self.dedupe = IdempotencyCache(max_keys, key_ttl)
        self.fences = FenceBook(max_sessions)

    # --- declaring tools -----------------------------------------------------------------

    def tool(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        schema: Mapping[str, JSONValue] | None = None,
        idempotent: bool = False,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: serve the function as a tool (default name: the function's). Its
        keyword arguments are the call's arguments; ``schema`` defaults to one made from
        its annotations."""

        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            self.add_function(
                function,
                name=name,
                description=description,
                schema=schema,
                idempotent=idempotent,
                timeout=timeout,
                retry=retry,
            )
            return function

        return register

    def add_function(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        schema: Mapping[str, JSONValue] | None = None,
        idempotent: bool = False,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        tool_name = name or function.__name__
        wants_context = CONTEXT_PARAMETER in inspect.signature(function).parameters
        if schema is None:
            schema = schema_of(function, frozenset({CONTEXT_PARAMETER}))
        info = ToolInfo(
            name=tool_name,
            description=description if description is not None else inspect.getdoc(function) or "",
            args_schema=dict(schema),
            idempotent=idempotent,
            timeout=timeout,
            retry=retry,
        )
        self._add(info, functools.partial(_run_function, function, wants_context))

    def add_process_tools(self, dispatcher: ProcessDispatcher) -> None:
        """Serve the tools of a tools.yaml registry (each runs as a process)."""
        for tool in dispatcher.tools.values():

            async def run(call: ToolCall, context: DispatchContext) -> ToolResult:
                return await dispatcher.dispatch(call, context)

            # The process dispatcher enforces the tool's own timeout (and stops the process).
            self._add(ToolInfo(name=tool.name, description=tool.description, timeout=tool.timeout), run)

    def _add(self, info: ToolInfo, run: Runner) -> None:
        if not info.name:
            raise ConfigError("a tool needs a name")
        if info.name in self._tools:
            raise ConfigError(f"tool {info.name!r} is defined twice")
        self._tools[info.name] = _Entry(info, run)

    # --- serving -------------------------------------------------------------------------------

    async def serve(self, listen: str = "127.0.0.1:50070", **options: Any) -> SidecarServer:
        """Start serving on ``listen`` (``HOST:PORT``, port 0 = any, or ``unix:///PATH``);
        ``options``: the other fields of SidecarOptions (token, tls_cert, grace, ...).
        Returns the running server (``address``, ``stop()``)."""
        server = SidecarServer(SidecarOptions(listen=listen, **options), dispatcher=self)
        await server.start()
        return server

    def run(self, listen: str = "127.0.0.1:50070", **options: Any) -> None:
        """Serve until SIGTERM or Ctrl-C, then drain (the entry point of a sidecar script)."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        server = SidecarServer(SidecarOptions(listen=listen, **options), dispatcher=self)
        asyncio.run(server.run_until_signalled(announce))

    # --- the ActionDispatcher port ---------------------------------------------------------

    def serves(self, tool_name: str) -> bool:
        return tool_name in self._tools

    def serves_any(self) -> bool:
        return bool(self._tools)

    async def list_tools(self) -> Sequence[ToolInfo]:
        return [entry.info for entry in self._tools.values()]

    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        context = context or DispatchContext(idempotency_key=call.idempotency_key)
        entry = self._tools.get(call.name)
        if entry is None:
            return _failure(call, f"tool not found: {call.name}", TOOL_NOT_FOUND_ERROR)
        # A caller that lost its lock must not act: refused before anything runs.
        try:
            self.fences.admit(context.session_id, context.fencing_token)
        except LockLost as exc:
            LOG.warning("call %r of tool %r refused: %s", call.id, call.name, exc.message)
            raise
        if entry.info.args_schema:
            found = problems(dict(call.args or {}), entry.info.args_schema)
            if found:
                message = f"invalid arguments for tool {call.name}: {'; '.join(found)}"
                return _failure(call, message, INVALID_ARGUMENTS_ERROR)
        key = context.idempotency_key or call.idempotency_key
        result = await self.dedupe.run(
            f"{call.name}\0{key}" if key else "", lambda: _bounded(entry, call, context)
        )
        # A deduplicated answer goes out under this call's ID.
        return result if result.id == call.id else _with_id(result, call.id)


async def _bounded(entry: _Entry, call: ToolCall, context: DispatchContext) -> ToolResult:
    limits = [entry.info.timeout] if entry.info.timeout else []
    if context.deadline is not None:
        limits.append(max(context.deadline - time.time(), 0.0))
    if not limits:
        return await entry.run(call, context)
    seconds = min(limits)
    try:
        async with asyncio.timeout(seconds):
            return await entry.run(call, context)
    except TimeoutError:
        return _failure(call, f"tool {call.name} timed out after {seconds:.3g}s", TIMEOUT_ERROR)


async def _run_function(
    function: Callable[..., Any], wants_context: bool, call: ToolCall, context: DispatchContext
) -> ToolResult:
    # A copy, so that a tool mutating its arguments cannot reach anyone else's.
    args: dict[str, Any] = orjson.loads(orjson.dumps(dict(call.args or {})))
    if wants_context:
        args[CONTEXT_PARAMETER] = context
    try:
        if inspect.iscoroutinefunction(function):
            outcome = await function(**args)
        else:
            outcome = await asyncio.to_thread(function, **args)
            if inspect.isawaitable(outcome):
                outcome = await outcome
    except Exception as exc:
        text = str(exc)
        return _failure(
            call,
            f"tool {call.name} failed: {type(exc).__name__}{': ' + text if text else ''}",
            type(exc).__name__,
        )
    try:
        result = orjson.loads(orjson.dumps(outcome))
    except TypeError as exc:
        return _failure(call, f"tool {call.name} returned a value that is not JSON: {exc}", "TypeError")
    return ToolResult(id=call.id, result=result)


def _failure(call: ToolCall, message: str, error_type: str) -> ToolResult:
    return ToolResult(id=call.id, is_error=True, error=message, error_type=error_type)


def _with_id(result: ToolResult, call_id: str) -> ToolResult:
    return ToolResult(
        id=call_id,
        result=result.result,
        is_error=result.is_error,
        is_denied=result.is_denied,
        error=result.error,
        error_type=result.error_type,
    )
