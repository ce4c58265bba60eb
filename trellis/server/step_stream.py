"""Sessions.Steps: Start, Navigate and Signal over one bidirectional stream.

Why a stream: on this Python gRPC stack a unary call costs the server about as
much CPU as the step it carries (and the client as much again), so a caller
sending many steps at once is served several times cheaper when they share one
stream. Each request is one step, run concurrently with the stream's others
exactly as its unary call would run it (the same servicer code, deadline,
limits, metrics and log line); its reply or its error goes back tagged with the
request's tag as soon as it is done. An error belongs to its step: the stream
goes on.

At most ``max_in_flight`` steps of a stream are held at once (running, or done
with their result not yet sent): the next request is not read until one is
answered, so a fast sender is slowed by gRPC's flow control instead of
queueing without bound in the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import grpc  # type: ignore[import-untyped]

from trellis.api import error_table
from trellis.api.v1 import sessions_pb2 as spb
from trellis.errors import InvalidInput, TrellisError
from trellis.server.guards import Servicer, abort_for, observed, session_of

StepCall = Callable[[Any], Awaitable[Any]]
"""A unary method's body without its context: request -> response."""


def error_message(exc: BaseException, session_id: str) -> spb.StepError:
    """The status a unary call would have ended with, as a stream's step error."""
    _code, _message, details = error_table.status_for(exc, session_id)
    error = spb.StepError()
    error.ParseFromString(details)  # google.rpc.Status and StepError share their encoding
    return error


_ENVELOPE: Final = 32
"""Bytes a result adds to its unary reply: its tag, the field headers, the reply's."""


def _fit(result: spb.SessionsStepResult, kind: str, max_bytes: int) -> None:
    """A unary reply may fill max_message_bytes with lifecycle events (their budget is
    what the reply has left); wrapped in a stream's reply it must still fit, so its
    events go (counted as dropped) rather than the step's answer, which was saved."""
    if result.ByteSize() + _ENVELOPE <= max_bytes:
        return
    events = getattr(result, kind).events
    dropped = len(events.events) + events.dropped
    events.Clear()
    events.dropped = dropped


class StepStream:
    """One open stream: reads steps, runs them, sends their results; the results that
    are ready together go in one message (up to ``max_bytes``).

    A step holds one of ``max_in_flight`` slots from when it is read until its result
    has been sent, so a caller that sends without reading can make the server hold at
    most that many steps and results, never more."""

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
        try:
            async for reply, count in self._replies():
                yield reply
                for _ in range(count):
                    self._slots.release()
            failure = self._failure
            if isinstance(failure, TrellisError):  # refused by this stream: its status
                await abort_for(self._context, failure)
            elif failure is not None:  # an abort (its status is set) or a broken stream
                raise failure
        finally:
            reader.cancel()
            for task in self._running.values():
                task.cancel()

    async def _replies(self) -> AsyncIterator[tuple[spb.SessionsStepsResponse, int]]:
        """The results as replies, each with as many as are ready (within max_bytes),
        and how many each holds; ends after the last result."""
        results = self._results
        while (result := await results.get()) is not None:
            reply = spb.SessionsStepsResponse()
            reply.results.append(result)
            size = reply.ByteSize()
            while not results.empty():
                more = results.get_nowait()
                if more is None:
                    yield reply, len(reply.results)
                    return
                grown = size + more.ByteSize() + 6  # + the field's tag and length
                if grown > self._max_bytes:
                    yield reply, len(reply.results)
                    reply, grown = spb.SessionsStepsResponse(), more.ByteSize() + 6
                reply.results.append(more)
                size = grown
            yield reply, len(reply.results)

    async def _read(self, requests: AsyncIterator[spb.SessionsStepsRequest]) -> None:
        try:
            async for request in requests:
                if len(request.steps) > self._max_in_flight:
                    # Refused whole: answering each excess step would let one message
                    # of tiny steps make the server build a million error results.
                    raise InvalidInput(
                        f"steps: at most {self._max_in_flight} per message, got {len(request.steps)}; "
                        "none of this message's steps was run",
                        field="steps",
                    )
                for step in request.steps:
                    await self._slots.acquire()
                    self._begin(step)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the stream broke, was aborted or refused: end with that
            self._failure = exc
        # Every step read is answered before the stream ends.
        while self._running:
            await asyncio.wait(list(self._running.values()))
        self._results.put_nowait(None)

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
            self._results.put_nowait(spb.SessionsStepResult(tag=tag, error=error_message(problem, "")))
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
            _fit(result, kind, self._max_bytes)
        except Exception as exc:
            result.error.CopyFrom(error_message(exc, session_of(request)))
        finally:
            del self._running[tag]
        self._results.put_nowait(result)
