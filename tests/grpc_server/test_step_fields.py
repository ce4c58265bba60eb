"""The step fields a UI reads (types.proto): input kind and default, the timeout's
signal, the signals a node accepts, each action's node, and a rejected answer."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support.grpc_server import running
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc, sessions_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import types_pb2 as pb
from trellis.server.config import ServerConfig

NODES = {
    "start.md": """\
        ---
        on_signal_default:
          interrupt: sure
        to: intro
        ---
        Hello.
        """,
    "intro.md": """\
        ---
        to: sure
        ---
        Passing through.
        """,
    "sure.md": """\
        ---
        input_type: confirm
        on_denied: pick
        to: pick
        ---
        Sure?
        """,
    "pick.md": """\
        ---
        input_type: choice
        input_options: [a, b]
        timeout: 5s
        on_timeout: sure
        on_signal:
          approve: sure
        transitions:
          - to: sure
            condition: "input == 'a'"
        ---
        Pick one.
        """,
}


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    for name, text in NODES.items():
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def _ask(step: pb.Step) -> pb.InputRequest:
    return next(a.request_input for a in step.actions if a.WhichOneof("kind") == "request_input")


async def test_a_step_tells_a_ui_what_it_needs(flow: Path) -> None:
    async with running(ServerConfig(flow_dir=str(flow))) as (_server, channel):
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        step = (await sessions.Start(spb.SessionsStartRequest(session_id="ui"))).step
        # Two text nodes passed through, then the question: each action names its node.
        assert [a.node_id for a in step.actions] == ["start", "intro", "sure", "sure"]
        sure = _ask(step)
        # A confirm without input_default: Enter means "yes", so there is a default.
        assert sure.kind == pb.INPUT_KIND_CONFIRM and sure.has_default and sure.default_value == ""
        assert list(step.signals) == ["interrupt"]
        assert not sure.timeout_signal and not step.input_rejected

        step = (await sessions.Navigate(spb.SessionsNavigateRequest(session_id="ui", input=pb.Input()))).step
        assert step.state.current_node_id == "pick"  # an unset input is Enter: the default "yes"
        pick = _ask(step)
        assert pick.kind == pb.INPUT_KIND_CHOICE and not pick.has_default
        assert pick.timeout_signal == "timeout" and pick.timeout.seconds == 5
        assert list(step.signals) == ["approve", "interrupt", "timeout"]

        again = (
            await sessions.Navigate(spb.SessionsNavigateRequest(session_id="ui", input=pb.Input(text="zzz")))
        ).step
        assert again.input_rejected and again.state.current_node_id == "pick"
        assert again.actions[0].system_message and again.actions[0].node_id == ""
        moved = (
            await sessions.Signal(spb.SessionsSignalRequest(session_id="ui", signal=pick.timeout_signal))
        ).step
        assert moved.state.current_node_id == "sure" and not moved.input_rejected

        engine = engine_pb2_grpc.EngineStub(channel)
        rendered = await engine.Render(epb.EngineRenderRequest(state=again.state))
        assert list(rendered.signals) == ["approve", "interrupt", "timeout"]
