"""Which service is served where (issue 8.5): StateStore and ActionDispatcher trust their
caller, so they are only on the internal listener; the public port serves Engine,
Sessions and GraphLoader."""

from __future__ import annotations

from pathlib import Path

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.grpc_server import failure, running
from trellis.api.v1 import dispatcher_pb2 as dpb
from trellis.api.v1 import dispatcher_pb2_grpc, sessions_pb2_grpc, store_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import store_pb2 as stpb
from trellis.api.v1 import types_pb2 as pb
from trellis.errors import ConfigError
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig

C = grpc.StatusCode
KEY = "a-signing-key-of-thirty-two-bytes"


def forged(session_id: str) -> pb.State:
    """Another user's session, rewritten: an admin role and a tool call nobody issued."""
    return pb.State(
        session_id=session_id,
        current_node_id="lookup",
        status=pb.STATUS_WAITING_FOR_TOOL,
        pending_tool_call="forged-call",
        system_context_json='{"role": "admin"}',
        history=["start", "shout", "lookup"],
    )


async def test_by_default_the_public_port_refuses_a_forged_state_and_arbitrary_tool_calls(
    flow: Path,
) -> None:
    async with running(ServerConfig(flow_dir=str(flow), signing_key=KEY)) as (server, channel):
        assert server.internal_port == 0 and server.internal_services == []
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        await sessions.Start(spb.SessionsStartRequest(session_id="victim"))

        store = store_pb2_grpc.StateStoreStub(channel)
        save = stpb.SaveRequest(session_id="victim", state=forged("victim"))
        assert (await failure(store.Save(save)))[0] == C.UNIMPLEMENTED
        # ... so the session cannot be driven on from the forged state.
        answer = pb.Input(tool_result=pb.ToolResult(id="forged-call", result_json='"x"'))
        code, reason, _ = await failure(
            sessions.Navigate(spb.SessionsNavigateRequest(session_id="victim", input=answer))
        )
        assert (code, reason) == (C.FAILED_PRECONDITION, "UNEXPECTED_TOOL_RESULT")
        state = (await sessions.Get(spb.SessionsGetRequest(session_id="victim"))).step.state
        assert state.current_node_id == "start" and not state.pending_tool_call
        assert "role" not in orjson.loads(state.system_context_json or "{}")

        dispatcher = dispatcher_pb2_grpc.ActionDispatcherStub(channel)
        call = pb.ToolCall(id="c", name="shout", args_json='{"text": "outside any flow"}')
        assert (await failure(dispatcher.Dispatch(dpb.DispatchRequest(call=call))))[0] == C.UNIMPLEMENTED


async def test_the_internal_listener_serves_the_store_and_dispatcher_and_nothing_public(flow: Path) -> None:
    config = ServerConfig(flow_dir=str(flow), internal_listen="127.0.0.1:0")
    async with running(config) as (server, public):
        assert server.internal_port not in (0, server.port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.internal_port}") as internal:
            store = store_pb2_grpc.StateStoreStub(internal)
            state = pb.State(session_id="k", current_node_id="start", history=["start"])
            revision = (await store.Save(stpb.SaveRequest(session_id="k", state=state))).revision
            assert revision > 0
            call = pb.ToolCall(id="c", name="shout", args_json='{"text": "hey"}')
            result = (await dispatcher_pb2_grpc.ActionDispatcherStub(internal).Dispatch(
                dpb.DispatchRequest(call=call)
            )).result
            assert orjson.loads(result.result_json) == "HEY"
            # The public services are not on the internal listener, nor the internal ones on the public port.
            get = spb.SessionsGetRequest(session_id="k")
            assert (await failure(sessions_pb2_grpc.SessionsStub(internal).Get(get)))[0] == C.UNIMPLEMENTED
            load = stpb.LoadRequest(session_id="k")
            assert (await failure(store_pb2_grpc.StateStoreStub(public).Load(load)))[0] == C.UNIMPLEMENTED
            # Each listener reports the health of its own services.
            health = health_pb2_grpc.HealthStub(internal)
            request = health_pb2.HealthCheckRequest(service="trellis.v1.StateStore")
            assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
            public_health = health_pb2_grpc.HealthStub(public)
            assert (await failure(public_health.Check(request)))[0] == C.NOT_FOUND


async def test_the_internal_listener_refuses_a_reachable_address_without_a_credential(flow: Path) -> None:
    server = TrellisServer(ServerConfig(flow_dir=str(flow), internal_listen="0.0.0.0:0"))
    with pytest.raises(ConfigError, match=r"internal_listen: '0\.0\.0\.0:0' is not a loopback address"):
        await server.start()
