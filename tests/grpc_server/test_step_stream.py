"""Sessions.Steps on the wire: steps of many sessions over one stream, each answered as
its unary call would be (errors included, in its own result), the stream's own limits
(64 running, 64 per message, running tags, timeouts), a malformed message, and a
graceful shutdown that answers running steps and ends the stream UNAVAILABLE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import orjson
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.support.servers import Served, serving
from tests.support.waiting import eventually
from trellis.adapters.inprocess_dispatcher import InProcessDispatcher
from trellis.adapters.memory_loader import MemoryLoader
from trellis.adapters.memory_store import MemoryStore
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.dispatching import DispatchContext
from trellis.domain import ToolCall, ToolResult
from trellis.errors import SessionNotFound

BOUND = 30.0
# Each answer goes through `hold`, a tool the server dispatches inside the step.
FLOW = [
    {"id": "start", "content": "name? " + "." * 10_000, "wait": True, "save_to": "name", "to": "work"},
    {"id": "work", "do": {"name": "hold", "args": {"who": "{{ .name }}"}}, "save_to": "held", "to": "start"},
]


class Gate(InProcessDispatcher):
    """Serves `hold`; while closed, its calls wait. Counts the calls running at once."""

    def __init__(self) -> None:
        super().__init__({"hold": lambda args: f"held {args['who']}"})
        self.open = asyncio.Event()
        self.open.set()
        self.running = 0
        self.most = 0

    async def dispatch(self, call: ToolCall, context: DispatchContext | None = None) -> ToolResult:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.open.wait()
            return await super().dispatch(call, context)
        finally:
            self.running -= 1


class Stream:
    """One Sessions.Steps call: send steps, read results by tag."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.outgoing: asyncio.Queue[spb.SessionsStepsRequest | None] = asyncio.Queue()
        self.call = sessions_pb2_grpc.SessionsStub(channel).Steps(self._requests())
        self.results: dict[int, spb.SessionsStepResult] = {}

    async def _requests(self) -> AsyncIterator[spb.SessionsStepsRequest]:
        while (request := await self.outgoing.get()) is not None:
            yield request

    def send(self, *steps: spb.SessionsStep) -> None:
        self.outgoing.put_nowait(spb.SessionsStepsRequest(steps=steps))

    async def result(self, tag: int) -> spb.SessionsStepResult:
        async with asyncio.timeout(BOUND):
            while tag not in self.results:
                reply = await self.call.read()
                assert reply is not grpc.aio.EOF, f"the stream ended before step {tag} was answered"
                for result in reply.results:
                    self.results[result.tag] = result
        return self.results[tag]

    async def end(self) -> grpc.StatusCode:
        """Half-close; read what is left; the stream's status code."""
        self.outgoing.put_nowait(None)
        try:
            async with asyncio.timeout(BOUND):
                while (reply := await self.call.read()) is not grpc.aio.EOF:
                    for result in reply.results:
                        self.results[result.tag] = result
        except grpc.aio.AioRpcError as err:
            return err.code()
        return await self.call.code()


def navigate(tag: int, session: str, text: str, **extra: Any) -> spb.SessionsStep:
    request = spb.SessionsNavigateRequest(session_id=session, input=pb.Input(text=text))
    return spb.SessionsStep(tag=tag, navigate=request, **extra)


def start(tag: int, session: str) -> spb.SessionsStep:
    return spb.SessionsStep(tag=tag, start=spb.SessionsStartRequest(session_id=session))


def reason_and_field(error: spb.StepError) -> tuple[str, str]:
    """The ErrorInfo reason and the BadRequest field of a step's error, read as the
    google.rpc.Status it is on the wire."""
    status = status_pb2.Status.FromString(error.SerializeToString())
    reason = field = ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field = bad.field_violations[0].field
    return reason, field


@pytest.fixture
async def gated() -> AsyncIterator[tuple[Served, Gate, MemoryStore, grpc.aio.Channel]]:
    gate, store = Gate(), MemoryStore()
    async with serving(loader=MemoryLoader(FLOW), store=store, dispatcher=gate) as served:
        async with grpc.aio.insecure_channel(served.target) as channel:
            yield served, gate, store, channel
        gate.open.set()


async def test_steps_of_many_sessions_share_one_stream_and_answer_as_unary_calls(gated) -> None:
    _served, _gate, store, channel = gated
    stream = Stream(channel)
    stream.send(*(start(n, f"s{n}") for n in range(10)))
    for n in range(10):
        assert (await stream.result(n)).start.created
    stream.send(*(navigate(100 + n, f"s{n}", f"n{n}") for n in range(10)))
    for n in range(10):
        step = (await stream.result(100 + n)).navigate.step
        context = orjson.loads(step.state.context_json)
        assert (context["name"], context["held"]) == (f"n{n}", f"held n{n}")
        assert step.state.revision == (await store.load(f"s{n}")).revision
    assert await stream.end() == grpc.StatusCode.OK

    # The unary call gives the same step.
    sessions = sessions_pb2_grpc.SessionsStub(channel)
    await sessions.Start(spb.SessionsStartRequest(session_id="u"))
    unary = await sessions.Navigate(spb.SessionsNavigateRequest(session_id="u", input=pb.Input(text="n0")))
    streamed = stream.results[100].navigate
    assert unary.step.actions == streamed.step.actions
    assert unary.step.state.history == streamed.step.state.history
    assert unary.step.state.context_json == streamed.step.state.context_json


async def test_a_failed_step_is_its_own_result_and_the_stream_goes_on(gated) -> None:
    _served, _gate, store, channel = gated
    stream = Stream(channel)
    stream.send(start(1, "s"))
    revision = (await stream.result(1)).start.step.state.revision
    stream.send(navigate(2, "missing", "x"), navigate(3, "s", "x" * 5000), navigate(4, "s", "ok"))
    missing, too_big, fine = (await stream.result(2)), (await stream.result(3)), (await stream.result(4))
    assert missing.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert reason_and_field(missing.error) == ("SESSION_NOT_FOUND", "")
    assert (
        too_big.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        and "size=5000" in too_big.error.message
    )
    assert reason_and_field(too_big.error)[0] == "INVALID_INPUT"
    assert fine.navigate.step.state.revision > revision
    assert orjson.loads(fine.navigate.step.state.context_json)["name"] == "ok"  # not the refused input
    assert (await store.load("s")).revision == fine.navigate.step.state.revision
    assert await stream.end() == grpc.StatusCode.OK


async def test_bad_steps_are_refused_one_by_one(gated) -> None:
    _served, gate, _store, channel = gated
    stream = Stream(channel)
    stream.send(start(1, "s"))
    revision = (await stream.result(1)).start.step.state.revision
    gate.open.clear()
    stream.send(navigate(2, "s", "held"))
    await eventually(lambda: gate.running == 1, "the step is running")
    stream.send(
        navigate(2, "s", "again"),  # the tag of a running step
        spb.SessionsStep(tag=3),  # no step
        navigate(4, "s", "x", timeout={"seconds": -1}),
    )
    assert reason_and_field((await stream.result(2)).error) == ("INVALID_INPUT", "tag")
    assert reason_and_field((await stream.result(3)).error) == ("INVALID_INPUT", "step")
    assert reason_and_field((await stream.result(4)).error) == ("INVALID_INPUT", "timeout")
    del stream.results[2]
    gate.open.set()
    assert (await stream.result(2)).navigate.step.state.revision > revision  # the first tag 2
    assert await stream.end() == grpc.StatusCode.OK


async def test_a_message_of_more_than_64_steps_ends_the_stream_and_runs_none(gated) -> None:
    _served, _gate, store, channel = gated
    stream = Stream(channel)
    stream.send(start(1, "first"))
    assert (await stream.result(1)).start.created
    stream.send(*(start(1000 + n, f"m{n}") for n in range(65)))
    assert await stream.end() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 64 per message, got 65" in await stream.call.details()
    for n in (0, 64):
        with pytest.raises(SessionNotFound):
            await store.load(f"m{n}")
    assert (await store.load("first")).revision > 0


async def test_at_most_64_steps_of_a_stream_run_at_once(gated) -> None:
    _served, gate, _store, channel = gated
    stream = Stream(channel)
    stream.send(*(start(n, f"s{n}") for n in range(50)))
    stream.send(*(start(50 + n, f"s{50 + n}") for n in range(50)))
    for n in range(100):
        await stream.result(n)
    gate.open.clear()
    stream.send(*(navigate(1000 + n, f"s{n}", "go") for n in range(50)))
    stream.send(*(navigate(1050 + n, f"s{50 + n}", "go") for n in range(50)))
    await eventually(lambda: gate.running == 64, "64 steps running")
    gate.open.set()
    for n in range(100):
        assert (await stream.result(1000 + n)).HasField("navigate")
    assert gate.most == 64
    assert await stream.end() == grpc.StatusCode.OK


async def test_a_sender_that_does_not_read_makes_the_server_hold_no_more_than_its_limit(gated) -> None:
    served, _gate, _store, _channel = gated
    # Without BDP probing the client's receive window stays at its initial 64 KiB, so
    # only a few of these ~10 KiB results fit in the transport while nobody reads.
    options = [("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(served.target, options=options) as channel:
        stream = Stream(channel)
        sessions = 400
        for batch in range(0, sessions, 50):
            stream.send(*(start(n, f"big{n}") for n in range(batch, batch + 50)))
        steps = served.server.observer.registry

        def started() -> float:
            value = steps.get_sample_value(
                "trellis_steps_total", {"service": "Sessions", "method": "Start", "outcome": "ok"}
            )
            return value or 0.0

        await eventually(lambda: started() >= 64, "the first steps ran")
        # Nobody reads: the count stops where the limit (and the transport's window) hold it.
        plateau = await _plateau(started)
        assert 64 <= plateau < 200, plateau
        for n in range(sessions):  # reading lets the rest run, each answered
            assert (await stream.result(n)).start.created
        assert started() == sessions
        assert await stream.end() == grpc.StatusCode.OK


async def _plateau(count: Callable[[], float], polls: int = 50, bound: float = BOUND) -> float:
    """The value ``count()`` settles at: unchanged over ``polls`` polls 20 ms apart."""
    async with asyncio.timeout(bound):
        last, same = count(), 0
        while same < polls:
            await asyncio.sleep(0.02)
            now = count()
            same = same + 1 if now == last else 0
            last = now
    return last


async def test_a_step_past_its_timeout_fails_and_is_not_saved(gated) -> None:
    _served, gate, store, channel = gated
    stream = Stream(channel)
    stream.send(start(1, "s"))
    revision = (await stream.result(1)).start.step.state.revision
    gate.open.clear()
    stream.send(navigate(2, "s", "late", timeout={"nanos": 200_000_000}))
    late = await stream.result(2)
    assert late.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert (await store.load("s")).revision == revision
    gate.open.set()
    assert await stream.end() == grpc.StatusCode.OK


async def test_a_malformed_message_ends_the_stream_after_its_running_steps_are_answered(gated) -> None:
    _served, gate, _store, channel = gated
    await sessions_pb2_grpc.SessionsStub(channel).Start(spb.SessionsStartRequest(session_id="s"))
    raw = channel.stream_stream(
        "/trellis.v1.Sessions/Steps",
        request_serializer=lambda data: data,
        response_deserializer=spb.SessionsStepsResponse.FromString,
    )
    outgoing: asyncio.Queue[bytes] = asyncio.Queue()

    async def requests() -> AsyncIterator[bytes]:
        while True:
            yield await outgoing.get()

    gate.open.clear()
    call = raw(requests())
    outgoing.put_nowait(spb.SessionsStepsRequest(steps=[navigate(1, "s", "running")]).SerializeToString())
    await eventually(lambda: gate.running == 1, "the step is running")
    outgoing.put_nowait(b"\xff\xff\xff")
    gate.open.set()
    answered: list[spb.SessionsStepResult] = []
    with pytest.raises(grpc.aio.AioRpcError):
        async with asyncio.timeout(BOUND):
            async for reply in call:
                answered.extend(reply.results)
    assert [result.tag for result in answered] == [1] and answered[0].HasField("navigate")
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SessionsStepsRequest" in (await call.details())
    sessions = sessions_pb2_grpc.SessionsStub(channel)
    assert (await sessions.Start(spb.SessionsStartRequest(session_id="after"))).created


async def test_shutdown_answers_running_steps_and_ends_the_stream_unavailable(gated) -> None:
    served, gate, store, channel = gated
    stream = Stream(channel)
    stream.send(start(1, "a"), start(2, "b"))
    await stream.result(1)
    b_revision = (await stream.result(2)).start.step.state.revision
    gate.open.clear()
    stream.send(navigate(3, "a", "running"))
    await eventually(lambda: gate.running == 1, "the step is running")
    stopping = asyncio.create_task(served.server.stop(grace=BOUND))
    await eventually(lambda: served.server._gate.in_flight == 1 and served.server._gate._closing, "closing")
    stream.send(navigate(4, "b", "after the close"))  # not read: never run
    gate.open.set()
    assert (await stream.result(3)).navigate.step.state.current_node_id == "start"
    assert await stream.end() == grpc.StatusCode.UNAVAILABLE
    assert 4 not in stream.results
    assert (await store.load("b")).revision == b_revision
    async with asyncio.timeout(BOUND):
        await stopping


def test_a_result_that_would_not_fit_a_message_loses_its_events_not_its_step() -> None:
    # A unary reply may use all of max_message_bytes (its events fill what is left);
    # wrapped as a stream result it would pass the limit and break the stream.
    from trellis.api.v1 import step_reports_pb2 as rpb
    from trellis.server.step_stream import _fit

    reply = spb.SessionsNavigateResponse()
    reply.step.state.session_id = "s"
    reply.step.state.context_json = '{"big": "' + "x" * 5000 + '"}'
    for n in range(100):
        reply.events.events.append(rpb.LifecycleEvent(node_id=f"n{n}"))
    reply.events.dropped = 7
    result = spb.SessionsStepResult(tag=1, navigate=reply)
    limit = reply.ByteSize()  # the unary reply fits exactly; the result does not
    _fit(result, "navigate", limit)
    assert result.ByteSize() < limit
    assert result.navigate.step == reply.step
    assert (len(result.navigate.events.events), result.navigate.events.dropped) == (0, 107)
    roomy = spb.SessionsStepResult(tag=1, navigate=reply)
    _fit(roomy, "navigate", limit + 100)
    assert roomy.navigate.events == reply.events
