"""Tracing behind the Connect/JSON listener (docs/http.md): the same spans as over gRPC, the
caller's trace continued from its ``traceparent`` header, the call's status on the span."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.tracing import traced_server

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def flow(directory: Path) -> Path:
    (directory / "start.md").write_text("---\nwait: true\nsave_to: name\nto: done\n---\nName?\n")
    (directory / "done.md").write_text("---\n---\nBye.\n")
    return directory


async def test_an_http_call_continues_the_callers_trace(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    headers = {"Content-Type": "application/json", "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    async with (
        traced_server(flow(tmp_path), exporter, http_listen="127.0.0.1:0") as server,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        base = f"http://127.0.0.1:{server.http_port}/trellis.v1.Sessions"
        async with http.post(f"{base}/Start", json={"sessionId": "h1"}, headers=headers) as reply:
            assert reply.status == 200, await reply.text()
        unknown = {"sessionId": "gone", "signal": "x"}
        async with http.post(f"{base}/Signal", json=unknown, headers=headers) as reply:
            assert reply.status == 404, await reply.text()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    start, signal = spans["trellis.v1.Sessions/Start"], spans["trellis.v1.Sessions/Signal"]
    for rpc in (start, signal):
        assert f"{rpc.context.trace_id:032x}" == CALLER_TRACE
        assert rpc.parent is not None and f"{rpc.parent.span_id:016x}" == CALLER_SPAN
    assert (start.attributes or {})["rpc.grpc.status_code"] == 0
    assert (signal.attributes or {})["rpc.grpc.status_code"] == 5  # NOT_FOUND
    assert signal.status.status_code.name == "ERROR"
