"""Whatever a client sends, the answer is a deliberate status (never UNKNOWN or
INTERNAL), it names what was wrong, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import grpc

from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc, sessions_pb2_grpc, store_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import store_pb2 as stpb
from trellis.api.v1 import types_pb2 as pb

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
