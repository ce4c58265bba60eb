"""Sessions.Steps: Start, Navigate and Signal over one bidirectional stream.

Why a stream: on this Python gRPC stack a unary call costs the server about as
much CPU as the step it carries (and the client as much again), so a caller
sending many steps at once is served several times cheaper when they share one
stream. Each request is one step, run concurrently with the stream's others
exactly as its unary call would run it (the same servicer code, deadline,
limits, metrics and log line); its reply or its error goes back tagged with the
request's tag as soon as it is done. An error belongs to its step: the stream
goes on.

At most ``max_in_flight`` steps of a stream run at once: the next request is
not read until one finishes, so a fast sender is slowed by gRPC's flow control
instead of queueing without bound in the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import grpc  # type: ignore[import-untyped]

from trellis.api import error_table
from trellis.api.v1 import sessions_pb2 as spb
from trellis.errors import InvalidInput
from trellis.server.guards import Servicer, observed, session_of

MAX_IN_FLIGHT: Final = 64
"""Steps one stream runs at once (docs/limits.md)."""

StepCall = Callable[[Any], Awaitable[Any]]
"""A unary method's body without its context: request -> response."""


def error_message(exc: BaseException, session_id: str) -> spb.StepError:
    """The status a unary call would have ended with, as a stream's step error."""
    _code, _message, details = error_table.status_for(exc, session_id)
    error = spb.StepError()
    error.ParseFromString(details)  # google.rpc.Status and StepError share their encoding
    return error


class StepStream:
    """One open stream: reads steps, runs them, sends their results; the results that
    are ready together go in one message (up to ``max_bytes``)."""

    def __init__(
        self,
        servicer: Servicer,
        calls: dict[str, StepCall],
        context: grpc.aio.ServicerContext,
        max_in_flight: int,
        max_bytes: int,
    ) -> None:
        self._servicer = servicer
        self._calls = calls
        self._context = context
        self._max_in_flight = max_in_flight
        self._max_bytes = max_bytes
        self._slots = asyncio.Semaphore(max_in_flight)
        self._results: asyncio.Queue[spb.SessionsStepResult | None] = asyncio.Queue()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._failure: BaseException | None = None

    async def serve(self, requests: AsyncIterator[spb.SessionsStepsRequest]) -> AsyncIterator[Any]:
        reader = asyncio.create_task(self._read(requests))
        results = self._results
        try:
            while (result := await results.get()) is not None:
                reply = spb.SessionsStepsResponse()
                reply.results.append(result)
                size = reply.ByteSize()
                ended = False
                while not results.empty():
                    more = results.get_nowait()
                    if more is None:
                        ended = True
                        break
                    grown = size + more.ByteSize() + 6  # + the field's tag and length
                    if grown > self._max_bytes:
                        yield reply
                        reply, grown = spb.SessionsStepsResponse(), more.ByteSize() + 6
                    reply.results.append(more)
                    size = grown
                yield reply
                if ended:
                    break
            if self._failure is not None:
                raise self._failure
        finally:
            reader.cancel()
            for task in self._running.values():
                task.cancel()

    async def _read(self, requests: AsyncIterator[spb.SessionsStepsRequest]) -> None:
        try:
            async for request in requests:
                for index, step in enumerate(request.steps):
                    if index >= self._max_in_flight:
                        self._refuse(
                            step,
                            InvalidInput(
                                f"steps: at most {self._max_in_flight} per message, got {len(request.steps)}",
                                field="steps",
                            ),
                        )
                        continue
                    await self._slots.acquire()
                    self._begin(step)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the stream broke or was aborted: end it with that
            self._failure = exc
        else:
            while self._running:  # the caller has sent everything: answer what runs
                await asyncio.wait(list(self._running.values()))
        self._results.put_nowait(None)

    def _refuse(self, step: spb.SessionsStep, problem: BaseException) -> None:
        self._results.put_nowait(spb.SessionsStepResult(tag=step.tag, error=error_message(problem, "")))

    def _begin(self, step: spb.SessionsStep) -> None:
        tag = step.tag
        kind = step.WhichOneof("step")
        if tag in self._running:
            problem: BaseException | None = InvalidInput(
                f"tag: {tag} is the tag of a step of this stream still running", field="tag"
            )
        elif kind is None:
            problem = InvalidInput("step: one of start, navigate or signal is required", field="step")
        else:
            problem = None
        if problem is not None:
            self._slots.release()
            self._refuse(step, problem)
            return
        assert kind is not None
        self._running[tag] = asyncio.create_task(self._run(tag, kind, step))

    async def _run(self, tag: int, kind: str, step: spb.SessionsStep) -> None:
        request = getattr(step, kind)
        remaining = self._context.time_remaining()
        call = self._calls[kind]
        result = spb.SessionsStepResult(tag=tag)
        try:
            if step.HasField("timeout"):
                timeout = step.timeout.ToTimedelta().total_seconds()
                if timeout <= 0:
                    raise InvalidInput(f"timeout: must be positive, got {timeout}s", field="timeout")
                remaining = timeout if remaining is None else min(timeout, remaining)
            response = await observed(
                self._servicer, kind.capitalize(), lambda: call(request), request, remaining
            )
            getattr(result, kind).CopyFrom(response)
        except Exception as exc:
            result.error.CopyFrom(error_message(exc, session_of(request)))
        finally:
            del self._running[tag]
            self._slots.release()
        self._results.put_nowait(result)
