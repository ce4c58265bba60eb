"""Call guards: every servicer method runs inside ``guarded_unary``/``guarded_stream``,
which bound it by the caller's deadline, record it (log line + metrics) and turn
exceptions into statuses through the error table (trellis.api.error_table).

A trellis error becomes its table code with ErrorInfo in the status details; a
caller deadline that expires inside the step becomes DEADLINE_EXCEEDED; anything
else is a bug: INTERNAL with the traceback logged, never the exception text.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc  # type: ignore[import-untyped]

from trellis.api import error_table, step_reports
from trellis.server.limits import Limits
from trellis.server.observe import Observer, StepRecord
from trellis.step_deadline import step_deadline

LOG = logging.getLogger("trellis.server")

Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def abort_for(context: grpc.aio.ServicerContext, exc: BaseException, session_id: str = "") -> NoReturn:
    code, message, details = error_table.status_for(exc, session_id)
    details = step_reports.status_details(exc, details)  # with the events the call fired, if any
    if code == grpc.StatusCode.INTERNAL:
        LOG.error("unexpected error in an RPC", exc_info=exc)
    await context.abort(code, message, trailing_metadata=((error_table.STATUS_DETAILS_KEY, details),))
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def _outcome(exc: BaseException) -> str:
    return error_table.reason_for(exc)


def _note_step(record: StepRecord, response: Any) -> None:
    step = getattr(response, "step", None)
    if step is not None and step.HasField("state"):
        record.session = record.session or step.state.session_id
        record.node = step.state.current_node_id


def _dispatch_session(request: Any) -> str:
    """The session of an ActionDispatcher.Dispatch (in its dispatch context), for the step log."""
    context = getattr(request, "context", None)
    return str(getattr(context, "session_id", "") or "")


def session_of(request: Any) -> str:
    """The session a request names: its session_id, its state's (Engine), or its dispatch
    context's; "" when none. Every error of the call carries it (error_table.SESSION_KEY)."""
    named = getattr(request, "session_id", "")
    if named:
        return str(named)
    state = getattr(request, "state", None)
    if state is not None and hasattr(state, "session_id"):
        return str(state.session_id) or _dispatch_session(request)
    return _dispatch_session(request)


class Servicer:
    """Base of every servicer: the observer its guarded methods report to and, when given,
    the limits every reply is checked against before it is sent."""

    service_name = ""

    def __init__(self, observer: Observer, limits: Limits | None = None) -> None:
        self.observer = observer
        self.reply_limits = limits


Unary = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


async def observed(
    servicer: Servicer, name: str, call: Callable[[], Awaitable[Any]], request: Any, remaining: float | None
) -> Any:
    """``call()`` as one recorded step of ``servicer.name``: bounded by ``remaining``
    seconds (None: no deadline), its reply checked against the limits, counted and
    logged however it ends. Raises what the call raised. A unary method and each step
    of a step stream run through here, so both behave alike."""
    observer = servicer.observer
    record = observer.begin(servicer.service_name, name)
    try:
        record.session = session_of(request)
        try:
            # The deadline is also recorded for the step itself: evaluation that does
            # not await cannot be interrupted by the timeout, so the session manager
            # checks it before saving, off-loop renders stop by it, and a tool call
            # carries it to its sidecar.
            with step_deadline(remaining):
                if remaining is None:
                    response = await call()
                else:
                    # Pass the caller's deadline down: lock waits, dispatches and
                    # store calls inside the step stop when the caller gives up.
                    async with asyncio.timeout(remaining):
                        response = await call()
            if servicer.reply_limits is not None:
                servicer.reply_limits.check_reply(response, f"{servicer.service_name}.{name}")
        except (grpc.aio.AbortError, asyncio.CancelledError):
            record.outcome = "aborted"
            raise
        except Exception as exc:
            record.outcome = _outcome(exc)
            raise
        _note_step(record, response)
        return response
    finally:
        observer.end(record)


def guarded_unary(fn: Unary) -> Unary:
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await observed(
                self, name, lambda: fn(self, request, context), request, context.time_remaining()
            )
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await abort_for(context, exc, session_of(request))

    return wrapper


def guarded_stream(fn: Stream) -> Stream:
    @functools.wraps(fn)
    async def wrapper(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        record = StepRecord(self.service_name, fn.__name__, session_of(request))
        try:
            async for item in fn(self, request, context):
                if self.reply_limits is not None:
                    self.reply_limits.check_reply(item, f"{self.service_name}.{fn.__name__}")
                yield item
        except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            record.outcome = _outcome(exc)
            self.observer.steps.labels(record.service, record.method, record.outcome).inc()
            await abort_for(context, exc, record.session)

    return wrapper
