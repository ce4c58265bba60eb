"""An in-process trellis server on 127.0.0.1 (port 0, read back) with a channel to it,
and what a failed call said."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import grpc

from trellis.api import error_table
from trellis.server.app import TrellisServer
from trellis.server.compose import Composition
from trellis.server.config import ServerConfig


@asynccontextmanager
async def running(
    config: ServerConfig, *, ports: Composition | None = None, metadata: Any = None
) -> AsyncIterator[tuple[TrellisServer, grpc.aio.Channel]]:
    config.listen = "127.0.0.1:0"
    if config.internal_listen:
        config.internal_listen = "127.0.0.1:0"
    server = TrellisServer(config, composition=ports)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield server, channel
    finally:
        await server.stop(grace=1.0)


def internal_channel(server: TrellisServer) -> grpc.aio.Channel:
    assert server.internal_port, "the server has no internal listener"
    return grpc.aio.insecure_channel(f"127.0.0.1:{server.internal_port}")


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, str]:
    """The status code, ErrorInfo reason and message of an RPC that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        details = None
        for key, value in exc.trailing_metadata() or ():
            if key == error_table.STATUS_DETAILS_KEY:
                details = value
        info = error_table.error_info_from(details)
        return exc.code(), info.reason if info is not None else "", exc.details() or ""
    raise AssertionError("the call succeeded but was expected to fail")
