"""The default memory store has a quota: past it a new session or a bigger state gets
RESOURCE_EXHAUSTED (STORE_FULL), and the server keeps serving what it holds."""

from __future__ import annotations

from pathlib import Path

import grpc
import orjson

from tests.support.grpc_server import failure, running
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.server.config import load_config


async def test_starts_past_the_memory_quota_get_resource_exhausted(flow: Path) -> None:
    config = load_config(
        flags={"flow_dir": str(flow)},
        environ={"TRELLIS_MEMORY_MAX_SESSIONS": "3", "TRELLIS_MEMORY_MAX_BYTES": "600000"},
    )
    context = orjson.dumps({"blob": "x" * 250_000}).decode()
    async with running(config) as (_server, channel):
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        for sid in ("a", "b"):
            await sessions.Start(spb.SessionsStartRequest(session_id=sid, context_json=context))
        code, reason, message = await failure(
            sessions.Start(spb.SessionsStartRequest(session_id="c", context_json=context))
        )
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STORE_FULL")
        assert "memory_max_bytes" in message and "'c'" in message
        await sessions.Start(spb.SessionsStartRequest(session_id="c"))  # a small one still fits
        code, reason, message = await failure(sessions.Start(spb.SessionsStartRequest(session_id="d")))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "STORE_FULL")
        assert "memory_max_sessions" in message
        await sessions.Delete(spb.SessionsDeleteRequest(session_id="a"))
        await sessions.Start(spb.SessionsStartRequest(session_id="d"))
        got = await sessions.Get(spb.SessionsGetRequest(session_id="b"))
        assert "blob" in got.step.state.context_json
