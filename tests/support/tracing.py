"""A traced trellis server in the test process: its spans go to the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trellis.adapters.grpc.channel import set_call_metadata
from trellis.server.app import TrellisServer
from trellis.server.config import ServerConfig


@asynccontextmanager
async def traced_server(
    flow: Path, exporter: InMemorySpanExporter, *, tracing: bool = True, **settings: object
) -> AsyncIterator[TrellisServer]:
    """``trellis serve FLOW`` on a free loopback port with ``settings`` (ServerConfig keys);
    with ``tracing``, its spans recorded by ``exporter`` as they end."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = ServerConfig(flow_dir=str(flow), listen="127.0.0.1:0", tracing=tracing)
    for key, value in settings.items():
        setattr(config, key, value)
    server = TrellisServer(config, tracer=provider.get_tracer("test"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=2.0)
        set_call_metadata(None)  # the process-wide hook a traced server sets
        provider.shutdown()
