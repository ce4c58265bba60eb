"""The engine options `trellis serve` shares with `trellis run`: the HTML interpolator and
running without a default error node (config key, TRELLIS_* variable, flag)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.support.cli import run_cli, write_flow
from tests.support.servers import flow_server
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.api.v1 import types_pb2 as pb
from trellis.cli.serve import flags_from, register
from trellis.errors import ConfigError
from trellis.server.config import load_config

FLOW = {
    "start.md": "---\ntype: question\nsave_to: name\nto: charge\n---\nName?\n",
    "charge.md": "---\ndo:\n  name: charge\nto: done\n---\nHello {{ .name }}\n",
    "done.md": "Paid\n",
    "error.md": "Something failed\n",
    "tools.yaml": "tools:\n  - name: charge\n    command: 'false'\n",
}


def test_file_environment_and_flags_set_them(tmp_path: Path) -> None:
    conf = tmp_path / "trellis.yaml"
    conf.write_text("html: true\nno_default_error_node: false\n")
    from_file = load_config(file=str(conf), environ={})
    assert (from_file.html, from_file.no_default_error_node) == (True, False)
    from_env = load_config(file=str(conf), environ={"TRELLIS_NO_DEFAULT_ERROR_NODE": "yes"})
    assert from_env.no_default_error_node is True

    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "flow", "--html", "--no-error-node"])
    from_flags = load_config(flags=flags_from(args), environ={})
    assert (from_flags.html, from_flags.no_default_error_node) == (True, True)
    unset = load_config(flags=flags_from(parser.parse_args(["serve", "flow"])), environ={"TRELLIS_HTML": "1"})
    assert unset.html is True  # a flag not given leaves the environment's value

    with pytest.raises(ConfigError, match=r"environment: 'html' must be true or false, got 'maybe'"):
        load_config(environ={"TRELLIS_HTML": "maybe"})
    both = load_config(flags={"default_error_node": "oops", "no_default_error_node": True}, environ={})
    with pytest.raises(ConfigError, match="contradict"):
        both.effective_error_node()


async def _walk(flow: Path, **settings: object) -> tuple[pb.Step | None, str]:
    async with flow_server(flow, **settings) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            sessions = sessions_pb2_grpc.SessionsStub(channel)
            await sessions.Start(spb.SessionsStartRequest(session_id="s"))
            try:
                reply = await sessions.Navigate(
                    spb.SessionsNavigateRequest(session_id="s", input=pb.Input(text="<b>Ada</b>"))
                )
            except grpc.aio.AioRpcError as exc:
                return None, exc.details() or ""
            return reply.step, ""


def _contents(step: pb.Step) -> list[str]:
    return [a.render_content.strip() for a in step.actions if a.WhichOneof("kind") == "render_content"]


async def test_a_server_escapes_html_and_goes_without_an_error_node_when_told(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", FLOW)
    plain, _ = await _walk(flow)
    assert plain is not None
    assert "Hello <b>Ada</b>" in _contents(plain)
    assert plain.state.current_node_id == "error"  # the flow's error node catches the failure

    escaped, _ = await _walk(flow, html=True)
    assert escaped is not None
    assert "Hello &lt;b&gt;Ada&lt;/b&gt;" in _contents(escaped)

    unhandled, failed = await _walk(flow, no_default_error_node=True)
    assert unhandled is None  # no error node: the failed tool fails the step
    assert "charge" in failed


def test_run_takes_the_same_options(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow", FLOW)
    plain = run_cli("run", str(flow), "--yes", stdin="<b>Ada</b>\n")
    assert "Hello <b>Ada</b>" in plain.out and "Something failed" in plain.out
    escaped = run_cli("run", str(flow), "--yes", "--html", "--no-error-node", stdin="<b>Ada</b>\n")
    assert "Hello &lt;b&gt;Ada&lt;/b&gt;" in escaped.out
    assert "Something failed" not in escaped.out
    assert escaped.code == 1 and "charge" in escaped.err
