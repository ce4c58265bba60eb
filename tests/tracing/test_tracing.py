"""OpenTelemetry tracing of `trellis serve` (docs/server.md, "Tracing"): the server in this
process records into the SDK's in-memory exporter; the tool runs in a real sidecar process
that traces too (TRELLIS_TRACING, OTEL_TRACES_EXPORTER=console: one JSON line per span on
its stdout), so the test sees both halves of one trace."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.tracing import traced_server
from trellis.api.v1 import sessions_pb2, sessions_pb2_grpc, types_pb2
from trellis.clients import Client
from trellis.server.app import TrellisServer
from trellis.sessions import SessionManager

ROOT = Path(__file__).resolve().parents[2]
BOUND = 60.0
TOKEN = "s3cret-token-never-in-a-span"
USER_INPUT = "Grace Hopper"  # not a substring of any hex ID or JSON key
# A caller's own trace: the RPC span must continue it.
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"

FLOW = {
    "start.md": "---\nwait: true\nsave_to: name\nto: lookup\n---\nWho are you?\n",
    "lookup.md": '---\ndo:\n  name: echo\n  args:\n    who: "{{ .name }}"\nsave_to: found\nto: done\n---\n',
    "done.md": "---\n---\nBye {{ .found.who }}.\n",
    "tools.yaml": "tools: []\n",
}


@dataclass
class TracedSidecar:
    process: asyncio.subprocess.Process
    url: str
    lines: list[str] = field(default_factory=list)

    async def stop(self) -> list[dict[str, Any]]:
        """SIGTERM (it drains and flushes its spans), then its spans as JSON objects."""
        if self.process.returncode is None:
            with suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
        assert self.process.stdout is not None
        async with asyncio.timeout(BOUND):
            rest = await self.process.stdout.read()
            await self.process.wait()
        self.lines += rest.decode().splitlines()
        return [json.loads(line) for line in self.lines if line.startswith("{")]


@asynccontextmanager
async def traced_sidecar() -> AsyncIterator[TracedSidecar]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRELLIS_TRACING": "true",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_SERVICE_NAME": "echo-sidecar",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.tracing.sidecar_app",
        "127.0.0.1:0",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    sidecar: TracedSidecar | None = None
    try:
        async with asyncio.timeout(BOUND):
            while sidecar is None:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"the sidecar exited ({await process.wait()}) before serving")
                if match := re.search(r"serving on (\S+)", line):
                    sidecar = TracedSidecar(process, f"grpc://{match.group(1)}")
        yield sidecar
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            await process.wait()


def write_flow(directory: Path) -> Path:
    for name, text in FLOW.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


async def walk(server: TrellisServer, session_id: str) -> sessions_pb2.SessionsNavigateResponse:
    """Start a session, then one Navigate that runs the sidecar's tool, with the caller's trace."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = sessions_pb2_grpc.SessionsStub(channel)
        auth = (("authorization", f"Bearer {TOKEN}"),)
        start = sessions_pb2.SessionsStartRequest(session_id=session_id)
        await stub.Start(start, metadata=auth, timeout=BOUND)
        traceparent = ("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
        typed = types_pb2.Input(text=USER_INPUT)
        reply: sessions_pb2.SessionsNavigateResponse = await stub.Navigate(
            sessions_pb2.SessionsNavigateRequest(session_id=session_id, input=typed),
            metadata=(*auth, traceparent),
            timeout=BOUND,
        )
        return reply


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def only(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, f"{len(found)} spans named {name}: {[s.name for s in spans]}"
    return found[0]


def kind_of(step: ReadableSpan) -> object:
    return (step.attributes or {}).get("trellis.step.kind")


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


async def test_a_navigate_is_one_trace_from_the_caller_through_the_step_to_the_sidecar(
    tmp_path: Path,
) -> None:
    exporter = InMemorySpanExporter()
    async with traced_sidecar() as sidecar:
        flow = write_flow(tmp_path)
        async with traced_server(flow, exporter, sidecars=[sidecar.url], token=TOKEN) as server:
            reply = await walk(server, "trace-1")
            assert reply.step.state.current_node_id == "done"
        sidecar_spans = await sidecar.stop()
    spans = exporter.get_finished_spans()
    rpc = only(spans, "trellis.v1.Sessions/Navigate")
    # The caller's trace goes on.
    assert f"{rpc.context.trace_id:032x}" == CALLER_TRACE
    assert f"{parent_of(rpc):016x}" == CALLER_SPAN
    assert rpc.attributes is not None and rpc.attributes["rpc.grpc.status_code"] == 0

    [step] = [s for s in named(spans, "trellis.step") if kind_of(s) == "navigate"]
    assert parent_of(step) == rpc.context.span_id
    assert dict(step.attributes or {}) == {
        "trellis.session.id": "trace-1",
        "trellis.step.kind": "navigate",
        "trellis.node.from": "start",
        "trellis.node.to": "done",
        "trellis.session.revision": 2,
    }
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == step.context.span_id}
    assert {"trellis.lock_and_load", "trellis.dispatch", "trellis.save_and_unlock"} <= set(children)
    dispatch = children["trellis.dispatch"]
    assert dispatch.attributes is not None
    assert dispatch.attributes["trellis.tool.name"] == "echo"
    assert dispatch.attributes["trellis.tool.outcome"] == "ok"
    assert dispatch.attributes["trellis.session.id"] == "trace-1"
    # In order: lock and load, the tool, then the save.
    lock, save = children["trellis.lock_and_load"], children["trellis.save_and_unlock"]
    # The local locker's share of taking the lock and loading (the rest is the load).
    waited = [s for s in named(spans, "trellis.lock") if parent_of(s) == lock.context.span_id]
    assert len(waited) == 1
    assert lock.end_time is not None and dispatch.start_time is not None
    assert lock.end_time <= dispatch.start_time
    assert dispatch.end_time is not None and save.start_time is not None
    assert dispatch.end_time <= save.start_time

    # The sidecar's span of the Dispatch call is the dispatch span's child, in the same trace.
    dispatched = [s for s in sidecar_spans if s["name"] == "trellis.v1.ActionDispatcher/Dispatch"]
    assert len(dispatched) == 1, [s["name"] for s in sidecar_spans]
    remote = dispatched[0]
    assert remote["context"]["trace_id"] == f"0x{CALLER_TRACE}"
    assert remote["parent_id"] == f"0x{dispatch.context.span_id:016x}"
    assert remote["kind"] == "SpanKind.SERVER"
    assert remote["resource"]["attributes"]["service.name"] == "echo-sidecar"

    # Neither the token nor what the user typed is in any span.
    everything = json.dumps(sidecar_spans) + "".join(span.to_json() for span in spans)
    assert TOKEN not in everything
    assert USER_INPUT not in everything


async def test_a_failed_call_is_an_error_span_with_its_grpc_code(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    unknown = sessions_pb2.SessionsNavigateRequest(session_id="nobody", input=types_pb2.Input(text="a"))
    flow = write_flow(tmp_path)
    async with traced_server(flow, exporter, token=TOKEN) as server:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sessions_pb2_grpc.SessionsStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                auth = (("authorization", f"Bearer {TOKEN}"),)
                await stub.Navigate(unknown, metadata=auth, timeout=BOUND)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    spans = exporter.get_finished_spans()
    rpc = only(spans, "trellis.v1.Sessions/Navigate")
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert rpc.status.status_code.name == "ERROR"
    step = only(spans, "trellis.step")
    assert step.status.status_code.name == "ERROR"
    assert step.status.description == "SessionNotFound"


async def test_with_tracing_off_nothing_is_traced_or_installed(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    async with traced_sidecar() as sidecar:
        async with traced_server(
            write_flow(tmp_path), exporter, tracing=False, sidecars=[sidecar.url], token=TOKEN
        ) as server:
            reply = await walk(server, "plain")
            assert reply.step.state.current_node_id == "done"
            # No wrapper around the steps (their cost matters: bench/grpc_steps.py --tracing).
            assert server.composition is not None
            assert isinstance(server.composition.sessions, SessionManager)
        sidecar_spans = await sidecar.stop()
    assert exporter.get_finished_spans() == ()
    # No trace context went to the sidecar: its span starts a trace of its own.
    dispatched = [s for s in sidecar_spans if s["name"] == "trellis.v1.ActionDispatcher/Dispatch"]
    assert len(dispatched) == 1 and dispatched[0]["parent_id"] is None


def test_serve_with_tracing_but_without_opentelemetry_names_the_extra(tmp_path: Path) -> None:
    # The extra missing, as in an install without it: opentelemetry cannot be imported.
    program = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from trellis.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            program,
            "serve",
            str(write_flow(tmp_path)),
            "--listen",
            "127.0.0.1:0",
            "--tracing",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode != 0
    assert "pip install 'trellis-flow[otel]'" in done.stderr


async def test_steps_over_the_step_stream_are_traced_each_in_a_trace_of_its_own(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    flow = write_flow(tmp_path)
    async with traced_server(flow, exporter, token=TOKEN) as server:
        async with Client(f"127.0.0.1:{server.port}", token=TOKEN, step_stream=True) as client:
            await asyncio.gather(*(client.sessions.start(f"s{n}") for n in range(3)))
    spans = exporter.get_finished_spans()
    steps = named(spans, "trellis.step")
    assert sorted((s.attributes or {}).get("trellis.session.id") for s in steps) == ["s0", "s1", "s2"]
    assert all(step.parent is None for step in steps)  # not children of the stream or of each other
    assert len({step.context.trace_id for step in steps}) == 3
    assert not named(spans, "trellis.v1.Sessions/Steps")
    assert TOKEN not in str([span.to_json() for span in spans])
