"""The Node client's step stream (`stepStream: true`: Start, Navigate and Signal over one
Sessions.Steps stream) against a real server: the same steps and errors as its unary
calls, many sessions at once, the per-step deadline, and steps that outlive a graceful
restart of the server (node_step_stream.js does the Node side)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2

from tests.support.cli import ROOT, copy_example
from tests.support.node import node_modules
from tests.support.replicas import health_of
from tests.support.servers import flow_server
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually
from trellis.clients import Client
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig

NODE_DIR = ROOT / "clients" / "node"
SCRIPT = Path(__file__).with_name("node_step_stream.js")

# The tour's tool, held until the test creates `release` beside it (bounded), so that
# a step is running on the server for as long as the test needs.
HELD_TOOL = """
import json, os, pathlib, sys, time
here = pathlib.Path(__file__).parent
(here / "started").touch()
for _ in range(1200):
    if (here / "release").exists():
        break
    time.sleep(0.05)
word = json.loads(os.environ.get("TRELLIS_ARGS") or "{}").get("word", "")
letters = [c for c in word if c.isalpha()]
print(json.dumps({"word": word, "letters": len(letters), "vowels": [c for c in letters if c in "aeiou"]}))
"""


@pytest.fixture(scope="module")
def modules() -> Path:
    return node_modules(NODE_DIR, "protobufjs")


def _events(out: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


async def _run(mode: str, target: str) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), mode, str(NODE_DIR), target,
        cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, f"{err.decode()}\n{out.decode()[-3000:]}"
    events = _events(out)
    assert events[-1] == {"event": "done"}
    return events


def _held_tour(tmp_path: Path) -> Path:
    tour = copy_example("tour", tmp_path)
    (tour / "tools" / "word_stats.py").write_text(HELD_TOOL, encoding="utf-8")
    return tour


@asynccontextmanager
async def _server(config: ServerConfig) -> AsyncIterator[TrellisServer]:
    server = TrellisServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=2.0)


async def test_steps_over_the_stream_are_the_unary_steps(modules: Path, tmp_path: Path) -> None:
    tour = copy_example("tour", tmp_path)
    async with flow_server(tour) as server:
        events = await _run("walk", f"127.0.0.1:{server.port}")
    by_event = {event["event"]: event for event in events}
    # The tour to its end (node_step_stream.js compared each step with the unary client's).
    walk = by_event["walk"]
    assert [step["node"] for step in walk["steps"]][-1] == "finish" and walk["steps"][-1]["terminal"]
    assert walk["history"] == [
        "start", "ask_name", "menu", "drink", "hot_drink", "menu", "agree", "agreed", "menu",
        "word_stats", "stats_result", "menu", "drink", "cold_drink", "menu", "finish",
    ]  # fmt: skip
    assert by_event["replay"] == {"event": "replay", "replayed": [False, True], "terminated": True}

    errors = {event["what"]: event for event in events if event["event"] == "error"}
    assert errors["unknown session"]["codeName"] == "NOT_FOUND"
    assert errors["unknown session"]["reason"] == "SESSION_NOT_FOUND"
    assert errors["unknown session"]["metadata"] == {"session_id": "nobody-here"}
    bad = errors["context not an object"]
    assert (bad["codeName"], bad["reason"]) == ("INVALID_ARGUMENT", "INVALID_INPUT")
    assert bad["metadata"]["field"] == "context_json"
    assert [v["field"] for v in bad["fieldViolations"]] == ["context_json"]
    assert errors["unhandled signal"]["reason"] == "UNHANDLED_SIGNAL"
    assert errors["after the end"]["reason"] == "SESSION_TERMINATED"

    # 80 sessions stepped at once, more than one message holds, over one stream.
    many = by_event["many"]
    assert many["streams"] == 1 and many["sessions"] == 80
    assert many["names"] == [f"Guest many-{n}" for n in range(80)]
    assert many["drinks"] == ["coffee"] * 80
    loop = ["drink", "hot_drink", "menu"]
    assert all(history == ["start", "ask_name", "menu", *loop, *loop] for history in many["histories"])
    assert "needs the gRPC transport" in by_event["connect"]["refused"]


async def test_the_example_walks_the_tour_over_the_step_stream(modules: Path, tmp_path: Path) -> None:
    """docs/clients.md's command, on a free port."""
    tour = copy_example("tour", tmp_path)
    async with flow_server(tour) as server:
        process = await asyncio.create_subprocess_exec(
            "node", "example.js", f"127.0.0.1:{server.port}", "demo2", "Ada",
            cwd=NODE_DIR, env=dict(os.environ, TRELLIS_STEP_STREAM="1"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(120):
            out, err = await process.communicate()
        async with Client(f"127.0.0.1:{server.port}") as client:
            history = (await client.sessions.get("demo2")).state.history
    lines = out.decode().splitlines()
    assert process.returncode == 0, f"{out.decode()}\n{err.decode()}"
    assert "> Ada" in lines and "# Goodbye, Ada" in lines and lines[-1] == "END finish"
    assert history == ["start", "ask_name", "menu", "finish"]


async def _start_node(mode: str, target: str) -> asyncio.subprocess.Process:
    """node_step_stream.js in ``mode``, paced through its stdin."""
    return await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), mode, str(NODE_DIR), target,
        cwd=NODE_DIR, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _say(process: asyncio.subprocess.Process, line: str) -> None:
    assert process.stdin is not None
    process.stdin.write(f"{line}\n".encode())
    await process.stdin.drain()


async def _end(process: asyncio.subprocess.Process) -> None:
    """Wait for the Node process to end (it does once its stdin is closed); killed
    after a bounded wait."""
    if process.stdin is not None and not process.stdin.is_closing():
        process.stdin.close()
    try:
        async with asyncio.timeout(30):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def _line(process: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    """The next JSON line of the Node process, which must be ``event``."""
    assert process.stdout is not None
    async with asyncio.timeout(60):
        line = await process.stdout.readline()
    assert line, f"node ended before {event!r}"
    message: dict[str, Any] = orjson.loads(line)
    assert message["event"] == event, message
    return message


async def test_a_step_whose_reply_is_held_fails_at_the_deadline_as_a_unary_call_does(
    modules: Path, tmp_path: Path
) -> None:
    tour = _held_tour(tmp_path)
    async with flow_server(tour) as server:
        proxy = TcpProxy("127.0.0.1", server.port)
        await proxy.start()
        node = await _start_node("deadline", proxy.endpoint)
        assert node.stdin is not None
        try:
            await _line(node, "ready")
            proxy.hold()  # the server serves the next steps; their replies stay here
            await _say(node, "go")
            late = await _line(node, "late")
            proxy.release()
            await _say(node, "released")
            again = await _line(node, "again")
            held = await _line(node, "held")
            # The client sent its deadline as the step's timeout: the server stops the
            # step there, while the tool is still held (without it, the step would run on).
            late_steps = {"service": "Sessions", "method": "Navigate", "outcome": "DEADLINE_EXCEEDED"}
            registry = server.observer.registry
            await eventually(
                lambda: registry.get_sample_value("trellis_steps_total", late_steps) == 1.0,
                "the server stopped the held step at its timeout",
            )
            await _line(node, "done")
        finally:
            (tour / "tools" / "release").touch()  # the held tool ends
            await _end(node)
            await proxy.cut()
    assert node.returncode == 0
    # Only the client's own deadline could end these steps: the same error on both.
    streamed, called = late["errors"]
    assert streamed["codeName"] == called["codeName"] == "DEADLINE_EXCEEDED"
    assert (streamed["reason"], called["reason"]) == ("", "")
    # They had been applied: sent again with their request IDs, they are replayed, and
    # the late answer on the stream did not disturb it.
    assert again["steps"] == [{"node": "drink", "replayed": True}] * 2
    assert again["streams"] == 1
    assert held == {"event": "held", "error": "DEADLINE_EXCEEDED"}


async def test_steps_cut_off_by_a_graceful_stop_are_retried_on_the_restarted_server(
    modules: Path, tmp_path: Path
) -> None:
    tour = _held_tour(tmp_path)
    tools = tour / "tools"
    config = ServerConfig(flow_dir=str(tour), listen="127.0.0.1:0", store=f"file:{tmp_path / 'sessions'}")
    first = TrellisServer(config)
    port = await first.start()
    target = f"127.0.0.1:{port}"
    node = await _start_node("restart", target)
    assert node.stdin is not None
    try:
        assert (await _line(node, "ready"))["streams"] == 1
        # busy's step runs the held tool; the server shuts down meanwhile: it takes no
        # new step, but answers the running one before ending the stream.
        await eventually(lambda: (tools / "started").exists(), "the tool step is running")
        stopping = asyncio.ensure_future(first.stop(grace=60))
        async with grpc.aio.insecure_channel(target) as channel:
            not_serving = int(health_pb2.HealthCheckResponse.NOT_SERVING)
            await eventually(lambda: _is(health_of(channel), not_serving), "the server is shutting down")
        await _say(node, "go")  # three more steps, on the stream the server reads no more
        await _line(node, "sent")
        (tools / "release").touch()
        async with asyncio.timeout(60):
            await stopping
        # The same port and store: the client's retries find this server by themselves.
        second = TrellisServer(ServerConfig(flow_dir=str(tour), listen=target, store=config.store))
        await second.start()
        try:
            after = await _line(node, "after")
            await _line(node, "done")
        finally:
            await second.stop(grace=2.0)
    finally:
        (tools / "release").touch()
        await first.stop(grace=2.0)
        await _end(node)
    assert node.returncode == 0

    assert after["tool"]["node"] == "menu" and "has 5 letter(s)" in "".join(after["tool"]["texts"])
    assert after["drinks"] == ["drink"] * 3 and after["teas"] == ["menu"] * 3
    assert after["streams"] >= 2  # the first stream ended; the steps went on a new one
    # Each step once: the request IDs kept a retried step from being applied twice.
    histories = after["histories"]
    assert histories["busy"] == ["start", "ask_name", "menu", "word_stats", "stats_result", "menu"]
    for calm in ("calm-1", "calm-2", "calm-3"):
        assert histories[calm] == ["start", "ask_name", "menu", "drink", "hot_drink", "menu"]


async def _is(status: Any, expected: int) -> bool:
    return bool(await status == expected)
