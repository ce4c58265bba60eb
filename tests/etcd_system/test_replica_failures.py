"""A replica that dies (SIGKILL) or freezes (SIGSTOP past its lease) in the middle of a
step holding a session's lock: another replica takes the session over once the lock's
lease expires, and the frozen one's late write is refused by the fence."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import orjson
from grpc_health.v1 import health_pb2

from tests.etcd_system.deployment import Deployment, channels
from tests.etcd_system.stepping import navigate
from tests.support.replicas import Replica, health_of
from tests.support.system_flows import write_slow_flow
from tests.support.waiting import eventually
from trellis.api.v1 import sessions_pb2 as spb
from trellis.api.v1 import sessions_pb2_grpc

LOCK_TTL = "2s"
# Generous bound for "within the lock TTL": the TTL plus time for a loaded 2-core machine.
TAKEOVER_TIMEOUT = 20.0


def _has_text(path: Path) -> bool:
    return path.exists() and bool(path.read_text())


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _slow_pair(deployment: Deployment, flow: Path, marker: Path) -> tuple[Replica, Replica]:
    """Replica A runs the slow tool blocking (until released), replica B runs it at once."""
    options: dict[str, object] = {"lock_ttl": LOCK_TTL, "dispatcher": flow / "tools.yaml", "entry": "start"}
    (a,) = deployment.replicas_for(1, "slow", name="a", env={"SLOW_MARKER": str(marker)}, options=options)
    (b,) = deployment.replicas_for(1, "slow", name="b", options=options)
    return a, b


async def _stored(stub: sessions_pb2_grpc.SessionsStub, session_id: str) -> object:
    return (await stub.Get(spb.SessionsGetRequest(session_id=session_id), timeout=20)).step.state


async def test_a_killed_lock_holder_is_taken_over_within_the_lock_ttl(
    deployment: Deployment, tmp_path: Path
) -> None:
    flow = write_slow_flow(tmp_path / "flow")
    await deployment.publish("slow", flow)
    marker = tmp_path / "marker"
    a, b = _slow_pair(deployment, flow, marker)
    async with channels([a, b]) as (chan_a, chan_b):
        sa, sb = sessions_pb2_grpc.SessionsStub(chan_a), sessions_pb2_grpc.SessionsStub(chan_b)
        started = (await sb.Start(spb.SessionsStartRequest(session_id="k"), timeout=20)).step.state
        in_flight = asyncio.ensure_future(navigate(sa, "k", "ada", within=60))
        await eventually(lambda: _has_text(marker), "A is inside the tool, holding the lock")
        tool_pid = int(marker.read_text())

        a.kill()
        lost = await in_flight
        assert lost.code == grpc.StatusCode.UNAVAILABLE  # the connection died with the process
        before = await _stored(sb, "k")
        assert before == started  # the killed step left nothing behind

        taken = await navigate(sb, "k", "bob", within=TAKEOVER_TIMEOUT)
        assert taken.code is None, f"B did not get the lock: {taken}"
        assert taken.state is not None and taken.state.current_node_id == "done"
        assert list(taken.state.history) == ["start", "work", "done"]
        context = orjson.loads(taken.state.context_json)
        assert (context["name"], context["result"]) == ("bob", "worked:bob")
        assert await _stored(sb, "k") == taken.state
        await eventually(lambda: _pid_gone(tool_pid), "the orphaned tool noticed its server is gone")


async def test_a_frozen_lock_holder_has_its_late_write_refused_by_the_fence(
    deployment: Deployment, tmp_path: Path
) -> None:
    flow = write_slow_flow(tmp_path / "flow")
    await deployment.publish("slow", flow)
    marker = tmp_path / "marker"
    a, b = _slow_pair(deployment, flow, marker)
    async with channels([a, b]) as (chan_a, chan_b):
        sa, sb = sessions_pb2_grpc.SessionsStub(chan_a), sessions_pb2_grpc.SessionsStub(chan_b)
        await sb.Start(spb.SessionsStartRequest(session_id="p"), timeout=20)
        in_flight = asyncio.ensure_future(navigate(sa, "p", "ada", within=90))
        await eventually(lambda: _has_text(marker), "A is inside the tool, holding the lock")

        a.pause()  # frozen while holding the lock: its lease stops being renewed
        try:
            newer = await navigate(sb, "p", "bob", within=TAKEOVER_TIMEOUT)
        finally:
            a.resume()
        assert newer.code is None, f"B did not get the lock of the frozen replica: {newer}"
        assert newer.state is not None
        await asyncio.to_thread(Path(f"{marker}.release").write_text, "go")  # A's tool answers, A saves

        late = await in_flight
        assert (late.code, late.reason) == (grpc.StatusCode.ABORTED, "LOCK_LOST"), late
        assert await _stored(sb, "p") == newer.state
        assert await _stored(sa, "p") == newer.state
        assert "worked:ada" not in newer.state.context_json

        # A noticed and says so, then serves again.
        lease_lost = re.compile(r"etcd lease [0-9a-f]+ lost")
        await eventually(lambda: bool(lease_lost.search(a.log())), "A logs the lost lease")

        async def serving() -> bool:
            status: int = await health_of(chan_a)
            return status == int(health_pb2.HealthCheckResponse.SERVING)

        await eventually(serving, "A is SERVING again")
        again = await navigate(sa, "p", "carol", within=20)
        assert again.code is None, again
        assert again.state is not None and again.state.current_node_id == "finish"
        assert again.state.revision > newer.state.revision
