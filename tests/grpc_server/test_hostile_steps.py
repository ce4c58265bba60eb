"""One hostile step cannot freeze the server: while it evaluates, health checks and
other sessions' steps are answered, and when its caller gives up it stops and saves
nothing (issue 8: one filter stalled every RPC, health included, for 66 s)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.grpc_server import failure, running
from tests.support.waiting import eventually
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc
from trellis.server.config import ServerConfig

LOOPING_FLOW = {
    "start.md": """\
        ---
        wait: true
        ---
        Counted {{ range .n }}{{ end }}{{ .n }}.
        """,
}


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


async def test_health_and_other_sessions_answer_while_a_hostile_step_evaluates(tmp_path: Path) -> None:
    # Budgets raised so far that the hostile render would run for minutes: what is tested
    # is that it does not hold the event loop, not that the budget stops it.
    config = ServerConfig(flow_dir=str(write(tmp_path / "flow", LOOPING_FLOW)), max_range_iterations=10**12)
    async with running(config) as (server, channel):
        sessions = sessions_pb2_grpc.SessionsStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        hostile = asyncio.ensure_future(
            sessions.Start(
                spb.SessionsStartRequest(session_id="hostile", context_json='{"n": 1000000000000}'),
                timeout=300,
            )
        )
        try:
            # Bounded wait until the hostile step holds its session: it is evaluating.
            manager = server.composition.sessions
            await eventually(lambda: hostile.done() or manager.lock_count() > 0, "the hostile step runs")
            assert not hostile.done(), "the hostile step ended early"

            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=60)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            other = await sessions.Start(
                spb.SessionsStartRequest(session_id="other", context_json='{"n": 3}'), timeout=60
            )
            assert other.step.actions[0].render_content == "Counted 3.\n"
            assert not hostile.done(), "the other calls were only answered after the hostile step"
        finally:
            hostile.cancel()

        # The caller gave up: the step stops, releases its session and saves nothing.
        await eventually(lambda: manager.lock_count() == 0, "the hostile step ends")
        code, reason, _ = await failure(sessions.Get(spb.SessionsGetRequest(session_id="hostile")))
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
