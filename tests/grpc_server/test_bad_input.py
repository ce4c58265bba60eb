"""Whatever a client sends, the answer is a deliberate status (never UNKNOWN or
INTERNAL), it names what was wrong, and the server keeps serving."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.grpc_server import failure, internal_channel, running
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc, sessions_pb2_grpc, store_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import store_pb2 as stpb
from trellis.api.v1 import types_pb2 as pb
from trellis.server.config import ServerConfig

NASTY_JSON = ["{", "[1, 2]", '"text"', "1e400", "NaN", "[" * 2000 + "]" * 2000, '{"a": }', "\x00"]


async def test_malformed_requests_get_deliberate_errors(served, internal) -> None:
    server, channel = served
    engine = engine_pb2_grpc.EngineStub(channel)
    sessions = sessions_pb2_grpc.SessionsStub(channel)
    store = store_pb2_grpc.StateStoreStub(internal)
    await sessions.Start(spb.SessionsStartRequest(session_id="ok"))

    calls: list[Any] = []
    for text in NASTY_JSON:
        calls += [
            engine.Start(epb.EngineStartRequest(session_id="x", context_json=text)),
            engine.Render(
                epb.EngineRenderRequest(
                    state=pb.State(session_id="x", current_node_id="start", system_context_json=text)
                )
            ),
            sessions.Start(spb.SessionsStartRequest(session_id="n", context_json=text)),
            sessions.Navigate(spb.SessionsNavigateRequest(session_id="ok", input=pb.Input(value_json=text))),
            store.Save(stpb.SaveRequest(session_id="x", state=pb.State(session_id="x", context_json=text))),
        ]
    calls += [
        engine.Render(
            epb.EngineRenderRequest(state=pb.State(session_id="x", current_node_id="start", status=99))
        ),
        engine.Render(epb.EngineRenderRequest()),
        engine.Navigate(epb.EngineNavigateRequest(state=pb.State(session_id="x", current_node_id=""))),
        engine.Start(epb.EngineStartRequest(session_id="x", context_json='{"a": "' + "x" * 300_000 + '"}')),
        sessions.Navigate(spb.SessionsNavigateRequest(session_id="", input=pb.Input(text="hi"))),
        sessions.Navigate(
            spb.SessionsNavigateRequest(session_id="ok", input=pb.Input(value_json="1" * 5000))
        ),
        sessions.Signal(spb.SessionsSignalRequest(session_id="ok", signal="")),
        sessions.List(spb.SessionsListRequest(page_size=-1)),
        sessions.List(spb.SessionsListRequest(page_token="\u2603")),
        store.List(stpb.StateStoreListRequest(page_size=-3)),
        store.Load(stpb.LoadRequest(session_id="../../etc/passwd")),
    ]
    deliberate = {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
    for call in calls:
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in deliberate, (exc.code(), exc.details())
            assert exc.details()
    # Still serving.
    got = await sessions.Get(spb.SessionsGetRequest(session_id="ok"))
    assert got.step.state.session_id == "ok"
    assert server.observer.registry.get_sample_value(
        "trellis_steps_total", {"service": "Engine", "method": "Start", "outcome": "INVALID_INPUT"}
    )


# A flow whose conditions and templates iterate over, or pad by, what the caller sends.
HOSTILE_FLOW = {
    "start.md": """\
        ---
        wait: true
        save_to: answer
        transitions:
          - to: padded
            condition: input == 'pad'
          - to: done
            condition: items.filter(x, x > 5).size() > 0
        to: done
        ---
        Counted{{ range .n }}.{{ end }}
        """,
    "padded.md": """\
        ---
        wait: true
        ---
        [{{ printf "%*d" .w 1 }}]
        """,
    "done.md": "---\n---\nDone.\n",
}


def write_hostile_flow(directory: Path) -> Path:
    directory.mkdir(parents=True)
    for name, text in HOSTILE_FLOW.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


async def test_hostile_evaluation_is_refused_saves_nothing_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    # The three cases, each with data under the context limit: a filter over
    # 30,000 elements (66 s before), range over 3e7 (9.8 s, 357 MB), printf width 3e8 (840 MB).
    async with running(ServerConfig(flow_dir=str(write_hostile_flow(tmp_path / "flow")))) as (_, channel):
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        engine = engine_pb2_grpc.EngineStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def start(sid: str, context: dict[str, Any]) -> Any:
            return sessions.Start(spb.SessionsStartRequest(session_id=sid, context_json=json.dumps(context)))

        def navigate(sid: str, text: str) -> Any:
            return sessions.Navigate(spb.SessionsNavigateRequest(session_id=sid, input=pb.Input(text=text)))

        async def state_of(sid: str) -> pb.State:
            return (await sessions.Get(spb.SessionsGetRequest(session_id=sid))).step.state

        # Huge range: Start renders the entry node; the session is not created.
        code, reason, message = await failure(start("range", {"n": 30_000_000}))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TEMPLATE_ERROR")
        assert "start.md:content" in message and "max_range_iterations" in message
        assert (await failure(sessions.Get(spb.SessionsGetRequest(session_id="range"))))[
            1
        ] == "SESSION_NOT_FOUND"

        # Hostile comprehension: the condition is refused before it runs; the state stays.
        await start("filter", {"items": [7] * 30_000})
        before = await state_of("filter")
        code, reason, message = await failure(navigate("filter", "go"))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONDITION_OVER_BUDGET")
        assert "transitions[1].condition" in message and "max_condition_cost" in message
        assert await state_of("filter") == before

        # Wide printf: the step into the padding node fails at its render; the state stays.
        await start("pad", {"w": 300_000_000})
        before = await state_of("pad")
        code, reason, message = await failure(navigate("pad", "pad"))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TEMPLATE_ERROR")
        assert "padded.md:content" in message and "max_printf_width" in message
        assert await state_of("pad") == before
        # The same through the stateless service.
        padded = pb.State(session_id="x", current_node_id="padded", context_json='{"w": 300000000}')
        code, reason, _ = await failure(engine.Render(epb.EngineRenderRequest(state=padded)))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "TEMPLATE_ERROR")

        # Still serving, and ordinary data still works.
        reply = await health.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await start("fine", {"n": 3, "items": [1, 9], "w": 3})
        assert (await navigate("fine", "pad")).step.actions[0].render_content == "[  1]\n"


# Each is sent as the raw body of a call: not valid protobuf for any request type.
MALFORMED = [
    # field 1 (session_id, a string) holding invalid UTF-8
    b"\x0a\x02\xff\xfe",
    b"\x0a\x03a\xc3\x28",
    # a length running past the end, a truncated varint, a reserved wire type, field number 0
    b"\x0a\x7fabc",
    b"\x10\xff\xff\xff",
    b"\x0f\x00",
    b"\x02\x00",
    # the nested state (field 1 of Render) with invalid UTF-8 in its session_id
    b"\x0a\x04\x0a\x02\xc3\x28",
]
RAW_METHODS = [
    "/trellis.v1.Engine/Start",
    "/trellis.v1.Engine/Render",
    "/trellis.v1.Sessions/Start",
    "/trellis.v1.Sessions/Get",
    "/trellis.v1.Sessions/Watch",
    "/trellis.v1.StateStore/Save",
    "/trellis.v1.StateStore/Load",
    "/trellis.v1.GraphLoader/GetNode",
]


async def test_malformed_protobuf_gets_invalid_argument_and_no_error_log(
    served: Any, internal: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    _server, public = served
    caplog.set_level(logging.DEBUG)
    codes: dict[grpc.StatusCode, int] = {}
    for method in RAW_METHODS:
        channel = internal if method.startswith("/trellis.v1.StateStore/") else public
        for body in MALFORMED:
            if method.endswith("/Watch"):
                call: Any = channel.unary_stream(method)(body)
                got = await failure(_drain(call))
            else:
                got = await failure(channel.unary_unary(method)(body))
            code, reason, message = got
            codes[code] = codes.get(code, 0) + 1
            if code is not grpc.StatusCode.INVALID_ARGUMENT:
                continue
            assert reason == "INVALID_INPUT", (method, body, got)
            assert "not a valid trellis.v1." in message, message
    # Some bodies parse as one message type but not another (field 0 never does, bad UTF-8 in
    # a string field never does); none may give UNKNOWN.
    assert set(codes) <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}, codes
    assert codes[grpc.StatusCode.INVALID_ARGUMENT] >= len(RAW_METHODS) * 4
    noisy = [r for r in caplog.records if r.levelno > logging.DEBUG and "serializ" in r.getMessage()]
    assert not noisy, [r.getMessage() for r in noisy]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Still serving.
    sessions = sessions_pb2_grpc.SessionsStub(public)
    started = await sessions.Start(spb.SessionsStartRequest(session_id="after"))
    assert started.step.state.session_id == "after"


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


async def test_a_huge_tool_result_is_refused_and_the_session_stays_readable(flow: Path) -> None:
    # The flow prints the result: a render budget above it lets the state limit be what refuses it.
    config = ServerConfig(
        flow_dir=str(flow), max_template_output_bytes=8 * 1024 * 1024, internal_listen="127.0.0.1:0"
    )
    async with running(config) as (server, channel), internal_channel(server) as internal:
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        await sessions.Start(spb.SessionsStartRequest(session_id="big"))
        waiting = await sessions.Navigate(
            spb.SessionsNavigateRequest(session_id="big", input=pb.Input(text="Ann"))
        )
        call_id = waiting.step.state.pending_tool_call
        assert call_id  # `lookup` is the client's to answer
        result = pb.ToolResult(id=call_id, result_json='"' + "x" * 1_500_000 + '"')
        answer = spb.SessionsNavigateRequest(session_id="big", input=pb.Input(tool_result=result))
        code, reason, message = await failure(sessions.Navigate(answer))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "STATE_TOO_LARGE"), message
        got = await sessions.Get(spb.SessionsGetRequest(session_id="big"))
        assert got.step.state.pending_tool_call == call_id
        loaded = await store_pb2_grpc.StateStoreStub(internal).Load(stpb.LoadRequest(session_id="big"))
        assert loaded.state.revision == got.step.state.revision
