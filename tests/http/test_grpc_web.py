"""gRPC-Web on the HTTP listener: the same calls framed the gRPC-Web way (enveloped
messages, then a trailer frame with grpc-status and the error table's details)."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.support.cli import copy_example
from tests.support.servers import flow_server
from tests.support.waiting import eventually
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import types_pb2 as pb
from trellis.server.app import TrellisServer

GRPC_WEB = {"Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


async def frames(reply: aiohttp.ClientResponse) -> tuple[list[bytes], dict[str, str]]:
    """The data frames and the trailers of a gRPC-Web reply."""
    messages: list[bytes] = []
    for _ in range(100):  # bounded: a reply of a few frames
        flags, length = struct.unpack(">BI", await reply.content.readexactly(5))
        payload = await reply.content.readexactly(length)
        if flags & 0x80:
            lines = payload.decode().strip().split("\r\n")
            return messages, {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        messages.append(payload)
    raise AssertionError("no trailer frame")


async def call(
    http: aiohttp.ClientSession, server: TrellisServer, method: str, body: bytes, **headers: str
) -> tuple[list[bytes], dict[str, str]]:
    async with http.post(
        f"http://127.0.0.1:{server.http_port}/trellis.v1.{method}",
        data=frame(body),
        headers={**GRPC_WEB, **headers},
    ) as reply:
        assert reply.status == 200 and reply.headers["Content-Type"] == "application/grpc-web+proto"
        return await frames(reply)


def error_info(trailers: dict[str, str]) -> error_details_pb2.ErrorInfo:
    value = trailers["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return info


async def test_unary_calls_and_errors(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    tour = copy_example("tour", tmp_path)
    async with flow_server(tour, http_listen="127.0.0.1:0", token="web-token") as server:
        auth = {"Authorization": "Bearer web-token"}
        start = spb.SessionsStartRequest(session_id="web").SerializeToString()
        messages, trailers = await call(http, server, "Sessions/Start", start)
        assert messages == [] and trailers["grpc-status"] == "16"  # no token
        assert error_info(trailers).reason == "UNAUTHENTICATED"

        messages, trailers = await call(http, server, "Sessions/Start", start, **auth)
        assert trailers == {"grpc-status": "0"}
        assert spb.SessionsStartResponse.FromString(messages[0]).step.state.current_node_id == "ask_name"

        missing = spb.SessionsGetRequest(session_id="nobody 100%").SerializeToString()
        messages, trailers = await call(http, server, "Sessions/Get", missing, **auth)
        assert messages == [] and trailers["grpc-status"] == "5"
        assert trailers["grpc-message"] == "session 'nobody 100%25' not found"  # percent-encoded
        assert error_info(trailers).reason == "SESSION_NOT_FOUND"

        _messages, trailers = await call(
            http, server, "Sessions/Get", missing, **auth, **{"grpc-timeout": "1x"}
        )
        assert trailers["grpc-status"] == "3" and "grpc-timeout" in trailers["grpc-message"]


async def test_a_watch_over_grpc_web(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    tour = copy_example("tour", tmp_path)
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        await call(
            http, server, "Sessions/Start", spb.SessionsStartRequest(session_id="w").SerializeToString()
        )
        watch = spb.SessionsWatchRequest(session_id="w").SerializeToString()
        async with http.post(
            f"http://127.0.0.1:{server.http_port}/trellis.v1.Sessions/Watch",
            data=frame(watch),
            headers={**GRPC_WEB, "grpc-timeout": "20S"},
        ) as reply:
            assert server.composition is not None
            sessions: Any = server.composition.sessions
            await eventually(lambda: sessions.watcher_count() == 1, "the server subscribed the watch")
            navigate = spb.SessionsNavigateRequest(session_id="w", input=pb.Input(text="Wu"))
            await call(http, server, "Sessions/Navigate", navigate.SerializeToString())
            flags, length = struct.unpack(">BI", await reply.content.readexactly(5))
            diff = spb.SessionsWatchResponse.FromString(await reply.content.readexactly(length)).diff
        assert flags == 0 and diff.current_node_id == "menu"
