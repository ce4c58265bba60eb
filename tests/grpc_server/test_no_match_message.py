"""An answer that matches no transition is said over gRPC as over the command line: a
SYSTEM_MESSAGE first in the step's actions, from Sessions and from the Engine service."""

from __future__ import annotations

from pathlib import Path

import grpc

from tests.support.cli import write_flow
from tests.support.servers import flow_server
from trellis.api.v1 import engine_pb2 as epb
from trellis.api.v1 import engine_pb2_grpc, sessions_pb2_grpc
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import types_pb2 as pb

FLOW = {
    "start.md": (
        "---\ntype: question\ntransitions:\n  - to: yes\n    condition: input == 'yes'\n---\nSay yes\n"
    ),
    "yes.md": "Thanks\n",
}
MESSAGE = "no transition matched that answer"


def _messages(step: pb.Step) -> list[str]:
    return [a.system_message for a in step.actions if a.WhichOneof("kind") == "system_message"]


async def test_sessions_and_engine_say_that_no_transition_matched(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", FLOW)
    async with flow_server(flow) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            sessions = sessions_pb2_grpc.SessionsStub(channel)
            await sessions.Start(spb.SessionsStartRequest(session_id="s"))
            missed = (
                await sessions.Navigate(
                    spb.SessionsNavigateRequest(session_id="s", input=pb.Input(text="no"))
                )
            ).step
            assert missed.state.current_node_id == "start"
            assert missed.actions[0].system_message == MESSAGE
            assert missed.actions[-1].WhichOneof("kind") == "request_input"  # asked again
            matched = (
                await sessions.Navigate(
                    spb.SessionsNavigateRequest(session_id="s", input=pb.Input(text="yes"))
                )
            ).step
            assert matched.state.current_node_id == "yes"
            assert _messages(matched) == []

            engine = engine_pb2_grpc.EngineStub(channel)
            started = (await engine.Start(epb.EngineStartRequest(session_id="e"))).step
            assert _messages(started) == []
            request = epb.EngineNavigateRequest(state=started.state, input=pb.Input(text="no"))
            again = (await engine.Navigate(request)).step
            assert again.actions[0].system_message == MESSAGE
