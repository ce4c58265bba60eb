"""`trellis mcp` driven by the MCP SDK's own client: a real subprocess over stdio and
over streamable HTTP, and over the sessions of a real trellis server."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.types import CallToolResult, TextResourceContents

from tests.support.cli import EXAMPLES, cli_env, copy_example, run_cli
from tests.support.servers import flow_server
from trellis.clients.client import Client as TrellisClient

GUARD = 60.0  # seconds: a guard against a hung process, never an assertion


def stdio(*args: str) -> StdioServerParameters:
    command = ["-m", "trellis.cli.main", "mcp", *args]
    return StdioServerParameters(command=sys.executable, args=command, env=cli_env())


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error_of(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error
    return " ".join(getattr(part, "text", "") for part in result.content)


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(part, "text", "") for part in result.content)


async def read_text(client: Client, uri: str) -> str:
    result = await client.read_resource(uri)
    (contents,) = result.contents
    assert isinstance(contents, TextResourceContents)
    return contents.text


async def test_an_agent_walks_the_tour_over_stdio() -> None:
    async with asyncio.timeout(GUARD), Client(stdio(str(EXAMPLES / "tour"))) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools == {"start_session", "answer", "signal", "get_session"}
        step = await call(client, "start_session", session_id="agent")
        assert step["node"] == "ask_name" and not step["finished"]
        step = await call(client, "answer", session_id="agent", input="")  # Enter: the default
        assert step["context"]["name"] == "traveller" and step["node"] == "menu"
        result = await client.call_tool("answer", {"session_id": "agent", "input": "finish"})
        assert isinstance(result, CallToolResult) and not result.is_error
        view = result.structured_content
        assert view is not None and view["node"] == "finish"
        # The text is what an agent reads first: what was said, then what is awaited.
        assert view["messages"][0] in text_of(result)
        while not view["finished"]:
            view = await call(client, "answer", session_id="agent", input="")
        assert "has finished" in text_of(await client.call_tool("get_session", {"session_id": "agent"}))


async def test_tools_run_and_signals_lead_where_the_flow_says() -> None:
    async with asyncio.timeout(GUARD), Client(stdio(str(EXAMPLES / "tour"))) as client:
        await call(client, "start_session", session_id="s")
        await call(client, "answer", session_id="s", input="Ada")
        # word_stats is run by the flow's tools.yaml (a real process) within the step.
        step = await call(client, "answer", session_id="s", input="tool")
        assert step["node"] == "menu" and step["context"]["stats"]["letters"] == 3
        assert any('says "Ada" has 3 letter(s)' in message for message in step["messages"])
        # The entry node's on_signal_default catches an interrupt anywhere.
        step = await call(client, "signal", session_id="s", signal="interrupt")
        assert step["node"] == "interrupted" and step["input"]["type"] == "confirm"


async def test_bad_calls_get_a_named_error_and_the_server_keeps_serving() -> None:
    async with asyncio.timeout(GUARD), Client(stdio(str(EXAMPLES / "tour"))) as client:
        assert "SESSION_NOT_FOUND" in await error_of(client, "answer", session_id="nobody", input="x")
        assert "INVALID_SESSION_ID" in await error_of(client, "get_session", session_id="../etc")
        huge = {"blob": "x" * (300 * 1024)}
        message = await error_of(client, "start_session", session_id="big", context=huge)
        assert "INVALID_INPUT" in message and "context" in message
        assert "SESSION_NOT_FOUND" in await error_of(client, "get_session", session_id="big")
        step = await call(client, "start_session", session_id="fine")
        assert step["node"] == "ask_name"


async def test_the_flow_is_readable_as_resources() -> None:
    async with asyncio.timeout(GUARD), Client(stdio(str(EXAMPLES / "tour"))) as client:
        graph = await read_text(client, "trellis://graph")
        assert graph.startswith("graph TD") and "menu" in graph and "ask_name" in graph
        nodes = json.loads(await read_text(client, "trellis://nodes"))
        assert nodes["entry"] == "start"
        ids = [node["id"] for node in nodes["nodes"]]
        assert ids == sorted(ids) and {"start", "menu", "finish"} <= set(ids)
        menu = json.loads(await read_text(client, "trellis://nodes/menu"))
        assert "drinks" in menu["input_options"] and menu["input_default"] == "finish"
        assert {"to": "finish", "condition": "input == 'finish'"} in menu["transitions"]
        with pytest.raises(Exception, match="no node 'nowhere'"):
            await client.read_resource("trellis://nodes/nowhere")


async def test_sessions_kept_in_a_store_dir_survive_a_restart(tmp_path: Path) -> None:
    flow = copy_example("tour", tmp_path)
    store = tmp_path / "sessions"
    for _ in range(2):
        async with asyncio.timeout(GUARD), Client(stdio(str(flow), "--store-dir", str(store))) as client:
            step = await call(client, "start_session", session_id="kept")
            if step["node"] == "ask_name":
                await call(client, "answer", session_id="kept", input="Ada")
    assert step["node"] == "menu" and step["context"]["name"] == "Ada"


@asynccontextmanager
async def mcp_over_http(*args: str) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "trellis.cli.main", "mcp", *args, "--http", "127.0.0.1:0",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(),
    )
    try:
        assert proc.stderr is not None
        line = b""
        for _ in range(50):  # the address line, after whatever the server logs first
            line = await asyncio.wait_for(proc.stderr.readline(), GUARD)
            if b"serving MCP" in line or not line:
                break
        assert b"serving MCP" in line, line
        yield line.decode().split(" at ", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), GUARD)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_an_agent_walks_the_tour_over_streamable_http() -> None:
    async with mcp_over_http(str(EXAMPLES / "tour")) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        async with asyncio.timeout(GUARD), Client(url) as client:
            step = await call(client, "start_session", session_id="web")
            step = await call(client, "answer", session_id="web", input="Grace")
            assert step["node"] == "menu" and step["context"]["name"] == "Grace"
            assert "SESSION_NOT_FOUND" in await error_of(client, "get_session", session_id="other")


async def test_the_tools_step_the_sessions_of_a_trellis_server() -> None:
    async with flow_server(EXAMPLES / "tour") as server:
        target = f"127.0.0.1:{server.port}"
        async with asyncio.timeout(GUARD), Client(stdio("--server", target)) as client:
            step = await call(client, "start_session", session_id="remote")
            step = await call(client, "answer", session_id="remote", input="Lin")
            assert step["node"] == "menu"
            graph = await read_text(client, "trellis://graph")
            assert "menu" in graph
        # The session lives in the server: another caller sees the step.
        async with TrellisClient(target) as other:
            kept = await other.sessions.get("remote")
        assert kept.state.current_node_id == "menu" and kept.state.context["name"] == "Lin"


def test_http_on_a_non_loopback_address_is_refused_without_allow_remote() -> None:
    result = run_cli("mcp", str(EXAMPLES / "tour"), "--http", "0.0.0.0:8765")
    assert result.code == 2
    assert "not a loopback address" in result.err and "--allow-remote" in result.err


def test_a_directory_or_a_server_is_required() -> None:
    result = run_cli("mcp")
    assert result.code == 2 and "DIR or --server" in result.err
    assert run_cli("mcp", "--help").out.count("start_session") >= 1

