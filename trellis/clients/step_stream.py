"""Steps over one Sessions.Steps stream (``Client(..., step_stream=True)``).

``StepStream`` has the Start/Navigate/Signal methods of the generated stub, and a
step that fails raises the grpc.aio.AioRpcError its unary call would have raised
(the same code, message and status details), so RemoteChannel.call's retries and
error mapping apply to it unchanged. Steps queued in one event-loop iteration
leave in one message; the stream is opened when a step needs it, and when it
breaks every step waiting on it fails with UNAVAILABLE (retried, under its
request ID, on a new stream).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc  # type: ignore[import-untyped]

from trellis.api import MAX_STREAM_STEPS, error_table
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc


def _rpc_error(code: grpc.StatusCode, message: str, details: bytes = b"") -> grpc.aio.AioRpcError:
    pairs = ((error_table.STATUS_DETAILS_KEY, details),) if details else ()
    trailing = grpc.aio.Metadata(*pairs)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=message)


def _step_error(error: spb.StepError) -> grpc.aio.AioRpcError:
    """The error a unary call would have raised: StepError is google.rpc.Status on the wire."""
    return _rpc_error(error_table.status_code(error.code), error.message, error.SerializeToString())


class _Open:
    """One stream and the steps waiting on it."""

    def __init__(self, stub: sessions_pb2_grpc.SessionsStub, metadata: tuple[tuple[str, str], ...]) -> None:
        self.outgoing: asyncio.Queue[spb.SessionsStep | None] = asyncio.Queue()
        self.waiting: dict[int, asyncio.Future[spb.SessionsStepResult]] = {}
        self.ended = False
        self.call = stub.Steps(self._requests(), metadata=metadata)
        self.reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[spb.SessionsStepsRequest]:
        outgoing = self.outgoing
        while (step := await outgoing.get()) is not None:
            request = spb.SessionsStepsRequest()
            request.steps.append(step)
            while not outgoing.empty() and len(request.steps) < MAX_STREAM_STEPS:
                more = outgoing.get_nowait()
                if more is None:
                    outgoing.put_nowait(None)  # still the end, after these
                    break
                request.steps.append(more)
            yield request

    async def _read(self) -> None:
        problem: BaseException = _rpc_error(grpc.StatusCode.UNAVAILABLE, "the step stream ended")
        try:
            async for reply in self.call:
                for result in reply.results:
                    future = self.waiting.pop(result.tag, None)
                    if future is not None and not future.done():
                        future.set_result(result)
        except grpc.aio.AioRpcError as err:
            problem = err
        except asyncio.CancelledError:
            problem = _rpc_error(grpc.StatusCode.CANCELLED, "the step stream was closed")
            raise
        finally:
            self.ended = True
            self.outgoing.put_nowait(None)  # ends the request generator too
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(problem)
            self.waiting.clear()

    def send(self, tag: int, step: spb.SessionsStep) -> asyncio.Future[spb.SessionsStepResult]:
        future: asyncio.Future[spb.SessionsStepResult] = asyncio.get_running_loop().create_future()
        self.waiting[tag] = future
        self.outgoing.put_nowait(step)
        return future

    async def close(self) -> None:
        self.outgoing.put_nowait(None)
        self.call.cancel()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


class StepStream:
    """Start, Navigate and Signal with the stub's signature, over a shared stream.
    ``metadata`` (the channel's: the token) is sent when a stream opens; what a step is
    called with is not, since it would hold for every step of the stream (a trace
    context of one step, for one)."""

    def __init__(
        self, stub: sessions_pb2_grpc.SessionsStub, metadata: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._open: _Open | None = None
        self._tags = itertools.count(1)

    def Start(self, request: Any, *, timeout: float | None = None, metadata: Any = ()) -> Awaitable[Any]:
        return self._step("start", request, timeout, metadata)

    def Navigate(self, request: Any, *, timeout: float | None = None, metadata: Any = ()) -> Awaitable[Any]:
        return self._step("navigate", request, timeout, metadata)

    def Signal(self, request: Any, *, timeout: float | None = None, metadata: Any = ()) -> Awaitable[Any]:
        return self._step("signal", request, timeout, metadata)

    async def _step(self, kind: str, request: Any, seconds: float | None, metadata: Any) -> Any:
        if self._open is None or self._open.ended:
            self._open = _Open(self._stub, self._metadata)
        tag = next(self._tags)
        step = spb.SessionsStep(tag=tag)
        getattr(step, kind).CopyFrom(request)
        if seconds is not None:
            step.timeout.FromNanoseconds(max(1, int(seconds * 1e9)))
        opened = self._open
        future = opened.send(tag, step)
        try:
            async with asyncio.timeout(seconds):
                result = await future
        except TimeoutError:
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        finally:
            opened.waiting.pop(tag, None)
        if result.HasField("error"):
            raise _step_error(result.error)
        return getattr(result, kind)

    async def close(self) -> None:
        if self._open is not None:
            await self._open.close()
            self._open = None
