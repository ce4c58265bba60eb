"""The stateless Engine service: the client carries the state; with a signing key
the server refuses states it did not issue (docs/engine-differences.md, fix #11)."""

from __future__ import annotations

from pathlib import Path

import grpc
import orjson

from tests.support.grpc_server import failure, running
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc, sessions_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import types_pb2 as pb
from trellis.server.config import ServerConfig


async def test_stateless_walk_returns_tool_calls_to_the_client(served) -> None:
    _, channel = served
    engine = engine_pb2_grpc.EngineStub(channel)
    step = (await engine.Start(epb.EngineStartRequest(session_id="e1", context_json='{"n": 1}'))).step
    assert step.state.current_node_id == "start" and step.state.revision == 0
    assert not step.state.signature  # no key configured

    rendered = await engine.Render(epb.EngineRenderRequest(state=step.state))
    assert list(rendered.actions) == list(step.actions)

    # The stateless engine never runs tools, even served ones: `shout` comes back.
    step = (
        await engine.Navigate(epb.EngineNavigateRequest(state=step.state, input=pb.Input(text="kim")))
    ).step
    assert step.state.status == pb.STATUS_WAITING_FOR_TOOL
    call = step.actions[-1].call_tool
    assert call.name == "shout"
    answer = pb.ToolResult(id=call.id, result_json='"KIM!"')
    step = (
        await engine.Navigate(epb.EngineNavigateRequest(state=step.state, input=pb.Input(tool_result=answer)))
    ).step
    assert step.state.current_node_id == "lookup"
    context = orjson.loads(step.state.context_json)
    assert context["shouted"] == "KIM!" and context["n"] == 1 and type(context["n"]) is int

    stopped = (await engine.Signal(epb.EngineSignalRequest(state=step.state, signal="interrupt"))).step
    assert stopped.state.current_node_id == "stopped" and stopped.terminal

    nodes = (await engine.Inspect(epb.EngineInspectRequest())).nodes
    by_id = {n.id: n for n in nodes}
    assert {"start", "shout", "lookup", "done", "stopped"} <= set(by_id)
    assert by_id["shout"].do_call.name == "shout"
    assert by_id["start"].on_signal_default["interrupt"] == "stopped"


async def test_bad_states_are_invalid_arguments(served) -> None:
    _, channel = served
    engine = engine_pb2_grpc.EngineStub(channel)
    bad = pb.State(session_id="e", current_node_id="start", context_json="{broken")
    code, reason, message = await failure(engine.Render(epb.EngineRenderRequest(state=bad)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    assert "state.context_json" in message
    ghost = pb.State(session_id="e", current_node_id="ghost")
    code, reason, _ = await failure(engine.Render(epb.EngineRenderRequest(state=ghost)))
    assert code == grpc.StatusCode.NOT_FOUND and reason == "NODE_NOT_FOUND"


async def test_signed_states_cannot_be_altered_or_forged(flow: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "state.key"
    key_file.write_text("a-long-enough-secret-for-hmac\n")
    async with running(ServerConfig(flow_dir=str(flow), signing_key_file=str(key_file))) as (_, channel):
        engine = engine_pb2_grpc.EngineStub(channel)
        step = (await engine.Start(epb.EngineStartRequest(session_id="sig"))).step
        assert len(step.state.signature) == 32

        # As issued: accepted, and the new state is signed again.
        moved = (
            await engine.Navigate(epb.EngineNavigateRequest(state=step.state, input=pb.Input(text="x")))
        ).step
        assert moved.state.signature and moved.state.signature != step.state.signature

        # Jumping ahead by editing the state is refused.
        tampered = pb.State()
        tampered.CopyFrom(step.state)
        tampered.current_node_id = "done"
        code, reason, _ = await failure(
            engine.Navigate(epb.EngineNavigateRequest(state=tampered, input=pb.Input(text="x")))
        )
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "STATE_SIGNATURE_INVALID")

        edited = pb.State()
        edited.CopyFrom(step.state)
        edited.system_context_json = '{"ans": "injected"}'
        code, reason, _ = await failure(engine.Render(epb.EngineRenderRequest(state=edited)))
        assert reason == "STATE_SIGNATURE_INVALID"

        unsigned = pb.State(session_id="sig", current_node_id="start", history=["start"])
        code, reason, _ = await failure(engine.Render(epb.EngineRenderRequest(state=unsigned)))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "STATE_SIGNATURE_INVALID")

        # Re-encoding the same JSON differently does not break the signature.
        spaced = pb.State()
        spaced.CopyFrom(step.state)
        spaced.context_json = " { } "
        await engine.Render(epb.EngineRenderRequest(state=spaced))


async def test_a_fully_rolled_back_state_renders_as_terminal_with_nothing_to_show(served) -> None:
    # Once the last compensation ran, the state is terminated with no current node
    # (docs/engine.md, "Tools and sagas").
    # The Engine service answers like the Sessions service does, not NOT_FOUND for node ''.
    _, channel = served
    engine = engine_pb2_grpc.EngineStub(channel)
    unwound = pb.State(
        session_id="rb", current_node_id="", status=pb.STATUS_TERMINATED, terminated=True, history=["start"]
    )
    rendered = await engine.Render(epb.EngineRenderRequest(state=unwound))
    assert rendered.terminal and list(rendered.actions) == []
    # Only a terminated state is treated so: an active one with no node is still unknown.
    lost = pb.State(session_id="rb", current_node_id="", history=["start"])
    code, reason, _ = await failure(engine.Render(epb.EngineRenderRequest(state=lost)))
    assert code == grpc.StatusCode.NOT_FOUND and reason == "NODE_NOT_FOUND"


async def test_text_answers_are_sanitised_once_by_both_services(served) -> None:
    server, channel = served
    limit = server.config.max_input_bytes
    engine = engine_pb2_grpc.EngineStub(channel)
    sessions = sessions_pb2_grpc.SessionsStub(channel)
    state = (await engine.Start(epb.EngineStartRequest(session_id="e1"))).step.state
    step = (
        await engine.Navigate(epb.EngineNavigateRequest(state=state, input=pb.Input(text="k\x1bim")))
    ).step
    assert orjson.loads(step.state.context_json)["name"] == "kim"
    await sessions.Start(spb.SessionsStartRequest(session_id="s1"))
    answer = spb.SessionsNavigateRequest(session_id="s1", input=pb.Input(text="k\x1bim"))
    step = (await sessions.Navigate(answer)).step
    assert orjson.loads(step.state.context_json)["name"] == "kim"
    too_long = pb.Input(text="x" * (limit + 1))
    code, reason, _ = await failure(engine.Navigate(epb.EngineNavigateRequest(state=state, input=too_long)))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
    code, reason, _ = await failure(
        sessions.Navigate(spb.SessionsNavigateRequest(session_id="s1", input=too_long))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")
