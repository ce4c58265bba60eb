"""Tool policies of a server configuration (``dispatcher: policies: <tool>: approval:``) over
gRPC: a denied tool never runs and the flow takes on_denied; a tool to confirm is asked for
through the session and runs only after a yes."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.support.cli import write_flow
from tests.support.tool_scripts import write_tools
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.errors import ConfigError
from trellis.server.app import TrellisServer
from trellis.server.config import load_config

# Each run of a tool appends its name to runs.log: what ran is what the file says.
RECORD = """
import os, pathlib, sys
with open(pathlib.Path(__file__).with_name("runs.log"), "a") as log:
    log.write(pathlib.Path(__file__).stem + "\\n")
sys.stdout.write('"done"')
"""

FLOW = {
    "start.md": "---\nwait: true\nsave_to: who\nto: pay\n---\nWho?\n",
    "pay.md": (
        "---\ndo:\n  name: charge\n  args: {who: '{{ .who }}'}\non_denied: refused\nto: wipe\n---\nPaying\n"
    ),
    "wipe.md": "---\ndo: {name: wipe}\non_denied: kept\nto: done\n---\n",
    "kept.md": "---\n---\nkept the data\n",
    "refused.md": "---\n---\nnot charged\n",
    "done.md": "---\n---\ndone\n",
}


def _served_config(tmp_path: Path, policies: str) -> Path:
    flow = write_flow(tmp_path / "flow", FLOW)
    write_tools(flow, {"charge": RECORD, "wipe": RECORD})
    path = tmp_path / "trellis.yaml"
    path.write_text(
        f"flow_dir: flow\nlisten: 127.0.0.1:0\ndispatcher:\n  default: process:flow/tools.yaml\n"
        f"  policies:\n{policies}",
        encoding="utf-8",
    )
    return path


def _runs(tmp_path: Path) -> list[str]:
    log = tmp_path / "flow" / "runs.log"
    return log.read_text().split() if log.exists() else []


def _texts(reply: spb.SessionsNavigateResponse) -> list[str]:
    return [a.render_content or a.system_message for a in reply.step.actions]


def _say(session_id: str, text: str) -> spb.SessionsNavigateRequest:
    return spb.SessionsNavigateRequest(session_id=session_id, input=pb.Input(text=text))


async def test_confirm_asks_through_the_session_and_deny_takes_on_denied(tmp_path: Path) -> None:
    config = load_config(
        file=str(_served_config(tmp_path, "    charge: {approval: confirm}\n    wipe: {approval: deny}\n")),
        environ={},
    )
    server = TrellisServer(config)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sessions_pb2_grpc.SessionsStub(channel)
            await stub.Start(spb.SessionsStartRequest(session_id="a"))
            asked = await stub.Navigate(_say("a", "Ada"))
            assert asked.step.state.current_node_id == "pay"
            assert any("Tool Request: 'charge'" in t for t in _texts(asked))
            requests = [a.request_input.type for a in asked.step.actions if a.HasField("request_input")]
            assert requests == ["confirm"]
            assert not [a for a in asked.step.actions if a.HasField("call_tool")]
            assert _runs(tmp_path) == []

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Navigate(_say("a", "maybe"))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert _runs(tmp_path) == []

            done = await stub.Navigate(_say("a", "yes"))
            # charge ran after the yes; wipe is denied by policy and never runs: on_denied
            assert done.step.state.current_node_id == "kept"
            assert _runs(tmp_path) == ["charge"]

            await stub.Start(spb.SessionsStartRequest(session_id="b"))
            await stub.Navigate(_say("b", "Bo"))
            no = await stub.Navigate(_say("b", "no"))
            assert no.step.state.current_node_id == "refused"
            assert _runs(tmp_path) == ["charge"]
    finally:
        await server.stop(grace=1.0)


def test_an_unknown_approval_is_named(tmp_path: Path) -> None:
    path = _served_config(tmp_path, "    charge: {approval: maybe}\n")
    with pytest.raises(ConfigError, match=r"policies\.charge\.approval: must be one of allow, deny, confirm"):
        load_config(file=str(path), environ={})
