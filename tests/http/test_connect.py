"""The HTTP listener over real loopback HTTP: Connect unary and streaming calls (JSON and
protobuf), the error table's details, bearer tokens, limits, and server-sent events.
The server is a real TrellisServer in this process serving a copy of examples/tour."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from google.rpc import error_details_pb2

from tests.support.cli import copy_example
from tests.support.servers import flow_server
from tests.support.waiting import eventually
from trellis.api.v1 import sessions_pb2 as spb
from trellis.clients import Client
from trellis.server.app import TrellisServer

JSON = {"Content-Type": "application/json"}
STREAM_JSON = {"Content-Type": "application/connect+json"}
TOKEN = "s3cret-token"


@pytest.fixture
def tour(tmp_path: Path) -> Path:
    return copy_example("tour", tmp_path)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def url(server: TrellisServer, path: str) -> str:
    return f"http://127.0.0.1:{server.http_port}{path}"


async def call(
    http: aiohttp.ClientSession, server: TrellisServer, method: str, body: dict[str, Any], **headers: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        url(server, f"/trellis.v1.{method}"), data=orjson.dumps(body), headers={**JSON, **headers}
    ) as reply:
        return reply.status, orjson.loads(await reply.read())


def error_info(error: dict[str, Any]) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of a Connect error, decoded from its base64 value (not the debug copy)."""
    [detail] = [d for d in error["details"] if d["type"] == "google.rpc.ErrorInfo"]
    value = detail["value"]
    info = error_details_pb2.ErrorInfo()
    info.ParseFromString(base64.b64decode(value + "=" * (-len(value) % 4)))
    return info


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


async def read_envelope(reply: aiohttp.ClientResponse) -> tuple[int, dict[str, Any]]:
    flags, length = struct.unpack(">BI", await reply.content.readexactly(5))
    return flags, orjson.loads(await reply.content.readexactly(length))


async def test_a_session_walked_over_http_is_the_one_grpc_sees(
    tour: Path, http: aiohttp.ClientSession
) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        status, started = await call(http, server, "Sessions/Start", {"sessionId": "walk"})
        assert status == 200 and started["created"] is True
        assert started["step"]["state"]["currentNodeId"] == "ask_name"
        status, named = await call(
            http, server, "Sessions/Navigate", {"sessionId": "walk", "input": {"text": "Ada"}}
        )
        assert status == 200 and named["step"]["state"]["currentNodeId"] == "menu"
        assert orjson.loads(named["step"]["state"]["contextJson"])["name"] == "Ada"
        async with Client(f"127.0.0.1:{server.port}") as client:
            step = await client.sessions.get("walk")
        assert step.state.current_node_id == "menu" and step.state.context["name"] == "Ada"
        # The stateless Engine and the GraphLoader are there too.
        status, node = await call(http, server, "GraphLoader/GetNode", {"nodeId": "menu"})
        assert status == 200 and node["node"]["id"] == "menu"


async def test_protobuf_bodies_work_like_json(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        body = spb.SessionsStartRequest(session_id="bin").SerializeToString()
        async with http.post(
            url(server, "/trellis.v1.Sessions/Start"),
            data=body,
            headers={"Content-Type": "application/proto"},
        ) as reply:
            assert reply.status == 200 and reply.headers["Content-Type"] == "application/proto"
            started = spb.SessionsStartResponse.FromString(await reply.read())
        assert started.created and started.step.state.current_node_id == "ask_name"
        # Bytes that are no SessionsGetRequest: the gRPC port's malformed-request refusal.
        async with http.post(
            url(server, "/trellis.v1.Sessions/Get"),
            data=b"\x0a\x05ab",
            headers={"Content-Type": "application/proto"},
        ) as reply:
            assert reply.status == 400
            error = orjson.loads(await reply.read())
        assert error["code"] == "invalid_argument" and "trellis.v1.SessionsGetRequest" in error["message"]
        assert error_info(error).reason == "INVALID_INPUT"


async def test_errors_carry_the_error_table_details(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        status, error = await call(http, server, "Sessions/Get", {"sessionId": "nobody"})
        assert status == 404 and error["code"] == "not_found"
        info = error_info(error)
        assert (info.reason, info.domain, dict(info.metadata)) == (
            "SESSION_NOT_FOUND",
            "trellis.dev",
            {"session_id": "nobody"},
        )
        assert error["details"][0]["debug"]["reason"] == "SESSION_NOT_FOUND"
        # A step the flow refuses: FAILED_PRECONDITION -> 400, the engine's reason.
        await call(http, server, "Sessions/Start", {"sessionId": "s"})
        status, error = await call(
            http, server, "Sessions/Navigate", {"sessionId": "s", "input": {"text": "x" * 5000}}
        )
        assert status == 400 and error["code"] == "invalid_argument"
        assert error_info(error).reason == "INVALID_INPUT" and "4096" in error["message"]
        # JSON that is not the request type: named, and nothing was started.
        status, error = await call(http, server, "Sessions/Start", {"sessionId": "t", "bogus": 1})
        assert status == 400 and "trellis.v1.SessionsStartRequest" in error["message"]
        # JSON nested past what the parser takes: a clear refusal, not a crash.
        deep = b'{"sessionId":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        async with http.post(url(server, "/trellis.v1.Sessions/Start"), data=deep, headers=JSON) as reply:
            assert reply.status == 400
            assert error_info(orjson.loads(await reply.read())).reason == "INVALID_INPUT"
        status, listed = await call(http, server, "Sessions/List", {})
        assert listed["sessionIds"] == ["s"]


async def test_what_the_listener_does_not_serve_is_refused(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0", internal_listen="127.0.0.1:0") as server:
        # The internal services stay off the public listeners, HTTP included.
        async with http.post(url(server, "/trellis.v1.StateStore/Load"), data=b"{}", headers=JSON) as reply:
            assert reply.status == 404
            assert orjson.loads(await reply.read())["code"] == "unimplemented"
        # The step stream needs full duplex: gRPC only, and the refusal says so.
        async with http.post(url(server, "/trellis.v1.Sessions/Steps"), data=b"{}", headers=JSON) as reply:
            assert reply.status == 404
            error = orjson.loads(await reply.read())
            assert error["code"] == "unimplemented" and "over gRPC only" in error["message"]
        async with http.post(
            url(server, "/trellis.v1.Sessions/Get"), data=b"{}", headers={"Content-Type": "text/plain"}
        ) as reply:
            assert reply.status == 415 and "application/json" in reply.headers["Accept-Post"]
        async with http.post(
            url(server, "/trellis.v1.Sessions/Get"),
            data=b"\x1f\x8b",
            headers={**JSON, "Content-Encoding": "gzip"},
        ) as reply:
            assert reply.status == 501
            assert orjson.loads(await reply.read())["code"] == "unimplemented"


async def test_a_bearer_token_is_required_like_on_grpc(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0", token=TOKEN) as server:
        status, error = await call(http, server, "Sessions/Start", {"sessionId": "a"})
        assert status == 401 and error["code"] == "unauthenticated"
        assert error_info(error).reason == "UNAUTHENTICATED"
        status, error = await call(
            http, server, "Sessions/Start", {"sessionId": "a"}, Authorization="Bearer wrong"
        )
        assert status == 401 and "invalid bearer token" in error["message"]
        async with http.get(url(server, "/v1/sessions/a/events")) as reply:
            assert reply.status == 401
        status, started = await call(
            http, server, "Sessions/Start", {"sessionId": "a"}, Authorization=f"Bearer {TOKEN}"
        )
        assert status == 200 and started["created"] is True


async def test_a_body_over_the_message_limit_is_refused_unread(
    tour: Path, http: aiohttp.ClientSession
) -> None:
    limit = 64 * 1024
    async with flow_server(tour, http_listen="127.0.0.1:0", max_message_bytes=limit) as server:
        big = orjson.dumps({"sessionId": "big", "contextJson": orjson.dumps({"x": "y" * limit}).decode()})
        async with http.post(url(server, "/trellis.v1.Sessions/Start"), data=big, headers=JSON) as reply:
            assert reply.status == 429
            error = orjson.loads(await reply.read())
        assert error["code"] == "resource_exhausted" and str(limit) in error["message"]
        assert error_info(error).reason == "REQUEST_TOO_LARGE"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(4):
                yield b" " * (limit // 2)

        async with http.post(url(server, "/trellis.v1.Sessions/Start"), data=chunks(), headers=JSON) as reply:
            assert reply.status == 429
        status, listed = await call(http, server, "Sessions/List", {})
        assert status == 200 and listed == {}


async def test_an_oversized_header_is_refused_by_the_http_parser(
    tour: Path, http: aiohttp.ClientSession
) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        async with http.post(
            url(server, "/trellis.v1.Sessions/List"), data=b"{}", headers={**JSON, "X-Big": "v" * 20_000}
        ) as reply:
            assert reply.status == 400
        status, _listed = await call(http, server, "Sessions/List", {})
        assert status == 200  # the server goes on serving


async def test_connect_timeout_ms_is_the_deadline(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        status, error = await call(http, server, "Sessions/List", {}, **{"Connect-Timeout-Ms": "soon"})
        assert status == 400 and "Connect-Timeout-Ms" in error["message"]
        await call(http, server, "Sessions/Start", {"sessionId": "w"})
        # A watch with a deadline ends with deadline_exceeded when nothing happens before it.
        async with http.post(
            url(server, "/trellis.v1.Sessions/Watch"),
            data=envelope(b'{"sessionId":"w"}'),
            headers={**STREAM_JSON, "Connect-Timeout-Ms": "200"},
        ) as reply:
            assert reply.status == 200
            flags, end = await read_envelope(reply)
        assert flags == 2 and end["error"]["code"] == "deadline_exceeded"


async def test_a_connect_stream_carries_the_watch(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        await call(http, server, "Sessions/Start", {"sessionId": "w"})
        async with http.post(
            url(server, "/trellis.v1.Sessions/Watch"),
            data=envelope(b'{"sessionId":"w"}'),
            headers=STREAM_JSON,
        ) as reply:
            assert reply.status == 200 and reply.headers["Content-Type"] == "application/connect+json"

            await eventually(lambda: server_open_watches(server) == 1, "the watch is open")
            await call(http, server, "Sessions/Navigate", {"sessionId": "w", "input": {"text": "Bo"}})
            flags, message = await read_envelope(reply)
        assert flags == 0 and message["diff"]["currentNodeId"] == "menu"
        # An unknown session: a 200 stream whose end carries the error.
        async with http.post(
            url(server, "/trellis.v1.Sessions/Watch"),
            data=envelope(b'{"sessionId":"no"}'),
            headers=STREAM_JSON,
        ) as reply:
            flags, end = await read_envelope(reply)
        assert flags == 2 and end["error"]["code"] == "not_found"
        assert error_info(end["error"]).reason == "SESSION_NOT_FOUND"


async def read_event(reply: aiohttp.ClientResponse) -> tuple[str, dict[str, Any]]:
    name, data = "", b""
    for _ in range(100):  # bounded: one event is a few lines
        line = (await reply.content.readline()).rstrip(b"\n")
        if not line:
            if name:
                return name, orjson.loads(data)
            continue
        field, _, value = line.partition(b": ")
        if field == b"event":
            name = value.decode()
        elif field == b"data":
            data = value
    raise AssertionError("no complete event")


async def test_server_sent_events_show_the_step_then_each_change(
    tour: Path, http: aiohttp.ClientSession
) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        await call(http, server, "Sessions/Start", {"sessionId": "e"})
        async with http.get(url(server, "/v1/sessions/e/events")) as reply:
            assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/event-stream")
            name, step = await read_event(reply)
            assert name == "step" and step["state"]["currentNodeId"] == "ask_name"
            # The watch opened before the step event was read: no step after it is missed.
            assert server_open_watches(server) == 1
            await call(http, server, "Sessions/Navigate", {"sessionId": "e", "input": {"text": "Eve"}})
            name, diff = await read_event(reply)
        assert name == "diff" and diff["currentNodeId"] == "menu"
        assert orjson.loads(diff["contextJson"]) == {"name": "Eve"}
        async with http.get(url(server, "/v1/sessions/ghost/events")) as reply:
            assert reply.status == 404
            assert error_info(orjson.loads(await reply.read())).reason == "SESSION_NOT_FOUND"


async def test_event_streams_share_the_watch_budget_and_give_it_back(
    tour: Path, http: aiohttp.ClientSession
) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0", max_watch_streams=1) as server:
        await call(http, server, "Sessions/Start", {"sessionId": "b"})
        first = await http.get(url(server, "/v1/sessions/b/events"))
        assert (await read_event(first))[0] == "step"
        assert server_open_watches(server) == 1  # the first stream holds the place
        async with http.get(url(server, "/v1/sessions/b/events")) as second:
            assert second.status == 429
            error = orjson.loads(await second.read())
        assert error["code"] == "resource_exhausted"
        assert error_info(error).reason == "TOO_MANY_WATCH_STREAMS"
        # A Connect stream shares the same budget.
        async with http.post(
            url(server, "/trellis.v1.Sessions/Watch"),
            data=envelope(b'{"sessionId":"b"}'),
            headers=STREAM_JSON,
        ) as reply:
            flags, end = await read_envelope(reply)
        assert flags == 2 and error_info(end["error"]).reason == "TOO_MANY_WATCH_STREAMS"
        first.close()  # the caller hangs up: its place is free again
        await eventually(lambda: server_open_watches(server) == 0, "the closed stream gave its place back")
        async with http.get(url(server, "/v1/sessions/b/events")) as third:
            assert (await read_event(third))[0] == "step"
            assert server_open_watches(server) == 1
            await call(http, server, "Sessions/Navigate", {"sessionId": "b", "input": {"text": "Bo"}})
            assert (await read_event(third))[0] == "diff"


def server_open_watches(server: TrellisServer) -> int:
    """Session watches open on the server (each holds a place of the watch budget)."""
    assert server.composition is not None
    sessions: Any = server.composition.sessions
    return int(sessions.watcher_count())


async def test_a_stream_request_that_is_not_one_envelope_is_refused(
    tour: Path, http: aiohttp.ClientSession
) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0") as server:
        for body in (b"\x00\x00", envelope(b'{"sessionId":"w"}')[:-1], envelope(b"{}") + envelope(b"{}")):
            async with http.post(
                url(server, "/trellis.v1.Sessions/Watch"), data=body, headers=STREAM_JSON
            ) as reply:
                assert reply.status == 200
                flags, end = await read_envelope(reply)
            assert flags == 2 and end["error"]["code"] == "invalid_argument"
            assert "envelope" in end["error"]["message"]
        assert server_open_watches(server) == 0


async def test_an_idle_event_stream_is_kept_alive(tour: Path, http: aiohttp.ClientSession) -> None:
    async with flow_server(tour, http_listen="127.0.0.1:0", keepalive_time=0.2) as server:
        await call(http, server, "Sessions/Start", {"sessionId": "k"})
        async with http.get(url(server, "/v1/sessions/k/events")) as reply:
            assert (await read_event(reply))[0] == "step"
            lines = [await reply.content.readline() for _ in range(2)]
        assert lines == [b": keepalive\n", b"\n"]
